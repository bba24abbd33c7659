"""Image preprocessing exactly as NVIDIA's processing utilities do it, with no torch.

NVIDIA's ``processing.py`` (DeepLearningExamples, torch.hub ``nvidia_convnets_processing_utils``)
runs torchvision's ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()`` and then subtracts the
ImageNet mean and divides by the std. On a PIL image those transforms are:

* ``Resize(256)``: the shorter side becomes 256, the longer ``int(256 * long / short)`` (truncated),
  resized with PIL's ``Image.resize`` and bilinear filtering (PIL's resampling filters antialias:
  their support grows with the reduction factor); no ``reducing_gap``, no JPEG draft mode;
* ``CenterCrop(224)``: top ``int(round((h - 224) / 2.0))``, left ``int(round((w - 224) / 2.0))``
  (Python's ``round``, half to even);
* ``ToTensor()``: uint8 HWC to float32 CHW in [0, 1];
* normalization in float32: ``(x - mean) / std``.

The sizes, filter, mean and std come from :class:`resnext_triton.spec.Preprocessing`.

Before that, every decoded image is brought to 8-bit RGB:

* the EXIF orientation tag is applied (``ImageOps.exif_transpose``), so a photo stored sideways
  with an orientation tag is classified as it is displayed;
* transparency (RGBA, LA, PA, palette or grayscale/RGB with a transparency key, premultiplied
  RGBa/La) is **composited on a white background**: the colour under fully transparent pixels is
  arbitrary (often black), and a white page is how such images are usually seen;
* grayscale (``1``, ``L``) is replicated to three channels; palette images are expanded;
* CMYK, YCbCr, LAB and HSV go through Pillow's conversion to RGB (embedded ICC profiles are not
  applied);
* 16-bit grayscale (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) and 32-bit integer (``I``, read as
  0..65535 and clipped to it) are **scaled** to 8 bits with ``round(v * 255 / 65535)``, not clipped;
  floating point (``F``) is read on a 0..1 scale when all values lie in [0, 1], otherwise on 0..255
  (clipped). Pillow itself decodes 16-bit RGB(A) PNGs to 8 bits by taking the high byte.

An image with more pixels than ``max_pixels`` (by default Pillow's ``Image.MAX_IMAGE_PIXELS``,
89,478,485) is refused from its header, before any pixel is decoded (decompression bomb).
"""

from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnext_triton.spec import Preprocessing

logger = logging.getLogger(__name__)



class PreprocessError(ValueError):
    """An input's bytes are not a usable image: empty, not an image, truncated, a decompression bomb."""


DEFAULT_MAX_PIXELS = 89_478_485
"""Pixel limit per image, Pillow's own ``Image.MAX_IMAGE_PIXELS`` default (0.25 GB of RGBA)."""

ALPHA_BACKGROUND = (255, 255, 255)
"""The colour transparent pixels are composited on (white)."""

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_PREMULTIPLIED = ("RGBa", "La")
_WITH_ALPHA = ("RGBA", "LA", "PA")


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """The (width, height) torchvision's ``Resize(shorter)`` gives an image of this size.

    The shorter side becomes ``shorter``; the longer one ``int(shorter * long / short)``.
    """
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of torchvision's ``CenterCrop(crop)`` (no padding case)."""
    top = round((height - crop) / 2.0)  # Python's round: half to even, as torchvision
    left = round((width - crop) / 2.0)
    return left, top, left + crop, top + crop


def _scale16(values: np.ndarray) -> np.ndarray:
    """Scale 0..65535 integers to 0..255 with rounding (``round(v * 255 / 65535)``)."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _composite_on_background(img: Image.Image) -> Image.Image:
    """Composite an RGBA image on :data:`ALPHA_BACKGROUND`, giving RGB."""
    background = Image.new("RGBA", img.size, (*ALPHA_BACKGROUND, 255))
    return Image.alpha_composite(background, img).convert("RGB")


def _premultiplied_on_background(img: Image.Image) -> Image.Image:
    """Composite a premultiplied image (RGBa, La) on the background: ``c + bg * (1 - a)``."""
    arr = np.asarray(img).astype(np.int32)
    alpha = arr[..., -1:]
    colour = arr[..., :3] if img.mode == "RGBa" else np.repeat(arr[..., :1], 3, axis=-1)
    background = np.asarray(ALPHA_BACKGROUND, dtype=np.int32)
    out = colour + (background * (255 - alpha) + 127) // 255
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an image of any Pillow mode to 8-bit RGB (see the module docstring for the rules).

    Raises:
        PreprocessError: if Pillow cannot convert the mode.
    """
    mode = img.mode
    try:
        if mode == "RGB" and "transparency" not in img.info:
            return img
        if mode in _SIXTEEN_BIT or mode == "I":
            return Image.fromarray(_scale16(np.asarray(img)), "L").convert("RGB")
        if mode == "F":
            return Image.fromarray(_float_to_uint8(np.asarray(img)), "L").convert("RGB")
        if mode in _PREMULTIPLIED:
            return _premultiplied_on_background(img)
        if mode in _WITH_ALPHA or "transparency" in img.info:
            return _composite_on_background(img.convert("RGBA"))
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise PreprocessError(f"cannot convert image mode {mode} to RGB: {exc}") from exc


def resize_and_crop(img: Image.Image, pre: Preprocessing) -> Image.Image:
    """Torchvision's ``Resize(pre.resize_shorter)`` then ``CenterCrop(pre.crop)`` on an RGB image."""
    width, height = resized_size(img.width, img.height, pre.resize_shorter)
    if (width, height) != img.size:
        img = img.resize((width, height), _RESAMPLE[pre.interpolation])
    return img.crop(crop_box(width, height, pre.crop))


def normalize(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """``ToTensor()`` then ``Normalize(mean, std)``: a float32 CHW array."""
    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(((arr - mean) / std).transpose(2, 0, 1))


def preprocess_image(img: Image.Image, pre: Preprocessing | None = None) -> np.ndarray:
    """Preprocess a decoded image: to RGB, resize, center crop, normalize; float32 (3, crop, crop).

    EXIF orientation is not applied here (:func:`open_image` does it when it decodes a file).

    Raises:
        PreprocessError: if the image mode cannot be converted.
    """
    pre = pre or Preprocessing()
    return normalize(resize_and_crop(to_rgb(img), pre), pre)


def open_image(
    source: str | os.PathLike[str] | bytes | IO[bytes], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode an image file (a path, its bytes or a binary file object), upright, in 8-bit RGB.

    The size is checked against ``max_pixels`` from the header before any pixel is decoded.

    Raises:
        PreprocessError: zero-byte or non-image data, a truncated or corrupt file, too many
            pixels (decompression bomb), an unconvertible mode.
        OSError: if a path cannot be opened (missing, a directory, no permission).
    """
    if isinstance(source, bytes):
        if not source:
            raise PreprocessError("empty file (0 bytes)")
        stream: IO[bytes] | str | os.PathLike[str] = io.BytesIO(source)
    else:
        stream = source
        if isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
            raise PreprocessError("empty file (0 bytes)")
    try:
        img = _decode(stream, max_pixels)
    except Image.DecompressionBombError as exc:
        raise PreprocessError(f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise PreprocessError("not an image (Pillow cannot identify it)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise PreprocessError(f"cannot decode image: {exc}") from exc
    return to_rgb(img)


def _decode(stream: IO[bytes] | str | os.PathLike[str], max_pixels: int) -> Image.Image:
    with Image.open(stream) as img:
        pixels = img.width * img.height
        if pixels > max_pixels:
            raise PreprocessError(
                f"decompression bomb: {img.width}x{img.height} = {pixels:,} pixels exceeds the limit of "
                f"{max_pixels:,} (--max-pixels)"
            )
        img.load()
        return upright(img)


def upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block is logged and the image kept as stored."""
    try:
        turned = ImageOps.exif_transpose(img)
    except (ValueError, TypeError, KeyError, IndexError, struct.error, OSError) as exc:
        logger.warning("ignoring malformed EXIF orientation: %s", exc)
        return img.copy()
    return turned if turned is not None else img.copy()


def preprocess_bytes(
    data: bytes, pre: Preprocessing | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode and preprocess an encoded image; float32 (3, crop, crop).

    Raises:
        PreprocessError: if the bytes are not a usable image.
    """
    return preprocess_image(open_image(data, max_pixels=max_pixels), pre)


def preprocess_path(
    path: str | os.PathLike[str], pre: Preprocessing | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode and preprocess an image file; float32 (3, crop, crop).

    Raises:
        PreprocessError: if the file is not a usable image.
        OSError: if the file cannot be opened.
    """
    return preprocess_image(open_image(Path(path), max_pixels=max_pixels), pre)
