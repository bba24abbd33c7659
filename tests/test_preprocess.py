"""The client's preprocessing against a float64 numpy reference, every image mode, EXIF, bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_triton.client.errors import PreprocessError
from resnext_triton.preprocess import (
    ALPHA_BACKGROUND,
    crop_box,
    open_image,
    preprocess_bytes,
    preprocess_image,
    preprocess_path,
    resized_size,
    to_rgb,
)
from resnext_triton.spec import Preprocessing

PRE = Preprocessing()


# ----------------------------------------------------------------------------------------- reference


def _bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's antialiased bilinear resampling as a dense (out, in) float64 matrix.

    Written from Pillow's ``precompute_coeffs`` (Resample.c): the triangle filter's support grows
    with the reduction factor; each output pixel's weights are normalized to sum to one.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    weights = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        x = np.arange(xmin, xmax)
        w = np.maximum(0.0, 1.0 - np.abs((x - center + 0.5) / filterscale))
        weights[xx, xmin:xmax] = w / w.sum()
    return weights


def _round_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, 255)


def reference_preprocess(rgb: np.ndarray, pre: Preprocessing = PRE, *, round_between_passes: bool = True) -> np.ndarray:
    """torchvision Resize(256) + CenterCrop(224) + ToTensor + Normalize on a uint8 HWC array, in float64.

    The resize is separable, horizontal pass first, as Pillow does; with ``round_between_passes``
    the intermediate image is rounded to uint8 as Pillow's 8-bit resampler stores it.
    """
    h, w = rgb.shape[:2]
    if w <= h:
        new_w, new_h = pre.resize_shorter, int(pre.resize_shorter * h / w)
    else:
        new_w, new_h = int(pre.resize_shorter * w / h), pre.resize_shorter
    x = rgb.astype(np.float64)
    if new_w != w:
        x = np.einsum("ow,hwc->hoc", _bilinear_weights(w, new_w), x)
        if round_between_passes:
            x = _round_u8(x)
    if new_h != h:
        x = np.einsum("oh,hwc->owc", _bilinear_weights(h, new_h), x)
    x = _round_u8(x)
    top = int(round((new_h - pre.crop) / 2.0))  # noqa: RUF046 -- spelled as torchvision spells it
    left = int(round((new_w - pre.crop) / 2.0))  # noqa: RUF046
    x = x[top : top + pre.crop, left : left + pre.crop] / 255.0
    return ((x - np.array(pre.mean)) / np.array(pre.std)).transpose(2, 0, 1)


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth-plus-noise RGB test image (so that resampling has something to do)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255.0 / width, yy * 255.0 / height, (xx + yy) % 97 * 2.6], axis=-1)
    noisy = base + rng.normal(0, 25, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("size", "expected"),
    [((500, 375), (341, 256)), ((375, 500), (256, 341)), ((256, 256), (256, 256)), ((100, 30), (853, 256))],
)
def test_resized_size_follows_torchvision(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert resized_size(*size, 256) == expected


def test_crop_box_rounds_half_to_even_like_torchvision() -> None:
    # (341 - 224) / 2 = 58.5 -> Python's round gives 58; (257 - 224) / 2 = 16.5 -> 16; 59.5 -> 60
    assert crop_box(341, 256, 224) == (58, 16, 282, 240)
    assert crop_box(257, 300, 224) == (16, 38, 240, 262)
    assert crop_box(343, 256, 224)[0] == 60


# ----------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (640, 427), (257, 333), (256, 256), (120, 90), (1031, 779)])
def test_matches_float64_reference(size: tuple[int, int]) -> None:
    img = _photo(*size, seed=size[0])
    ours = preprocess_image(img, PRE)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    ref = reference_preprocess(np.asarray(img))
    # Pillow computes with 22-bit fixed-point weights: at most one uint8 level apart, rarely.
    one_level = 1.0 / 255.0 / min(PRE.std)
    diff = np.abs(ours - ref)
    assert diff.max() <= one_level + 1e-5
    assert (diff < 1e-5).mean() > 0.99
    # and a plain float64 resize without intermediate rounding stays within two levels
    plain = reference_preprocess(np.asarray(img), round_between_passes=False)
    assert np.abs(ours - plain).max() <= 2 * one_level + 1e-5


def test_normalization_in_float32_as_torch() -> None:
    img = Image.fromarray(np.full((224, 224, 3), (0, 128, 255), dtype=np.uint8), "RGB")
    arr = preprocess_image(img, PRE)
    expected = [
        (np.float32(v) / np.float32(255) - np.float32(m)) / np.float32(s)
        for v, m, s in zip((0, 128, 255), PRE.mean, PRE.std, strict=True)
    ]
    np.testing.assert_array_equal(arr[:, 0, 0], np.array(expected, dtype=np.float32))


def test_parameters_come_from_the_spec() -> None:
    small = Preprocessing(resize_shorter=40, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    img = _photo(80, 60)
    arr = preprocess_image(img, small)
    assert arr.shape == (3, 32, 32)
    np.testing.assert_allclose(arr, reference_preprocess(np.asarray(img), small), atol=1 / 255 / 0.5 + 1e-5)


def test_real_photos_match_reference(photos: list[Path]) -> None:
    for path in photos[:3]:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        diff = np.abs(preprocess_path(path) - reference_preprocess(rgb))
        assert diff.max() <= 1 / 255 / min(PRE.std) + 1e-5, path.name


# ----------------------------------------------------------------------------------------- modes


def _rgb(img: Image.Image) -> np.ndarray:
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == img.size
    return np.asarray(out).astype(int)


def test_grayscale_and_bilevel_are_replicated() -> None:
    gray = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")
    arr = _rgb(gray)
    assert (arr[..., 0] == np.asarray(gray)).all() and (arr[..., 0] == arr[..., 2]).all()
    assert set(np.unique(_rgb(gray.convert("1")))) <= {0, 255}


def test_palette_is_expanded() -> None:
    img = _photo(32, 32)
    pal = img.quantize(16)
    np.testing.assert_array_equal(_rgb(pal), np.asarray(pal.convert("RGB")))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "RGBa", "La"])
def test_alpha_is_composited_on_white(mode: str) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[0, :, 3] = 0  # transparent row: background
    rgba[1, :, 3] = 255  # opaque row: the colour
    rgba[2, :, 3] = 128  # half: a blend
    base = Image.fromarray(rgba, "RGBA")
    img = base.convert("LA").convert(mode) if mode in ("LA", "La") else base.convert(mode)
    arr = _rgb(img)
    assert ALPHA_BACKGROUND == (255, 255, 255)
    assert (arr[0] == 255).all()
    assert (np.abs(arr[1] - 200) <= 1).all()
    assert (np.abs(arr[2] - (200 * 128 + 255 * 127) / 255) <= 2).all()


def test_palette_and_gray_transparency_keys_are_honoured() -> None:
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 1
    assert (_rgb(pal) == 255).all()
    gray = Image.new("L", (4, 4), 7)
    gray.info["transparency"] = 7
    assert (_rgb(gray) == 255).all()


def test_cmyk_ycbcr_lab_hsv_convert_through_pillow() -> None:
    img = _photo(16, 16)
    for mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        converted = img.convert(mode) if mode != "LAB" else Image.new("LAB", (16, 16), (50, 128, 128))
        np.testing.assert_array_equal(_rgb(converted), np.asarray(converted.convert("RGB")))
    white = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    assert (_rgb(white) == 255).all()
    black = Image.new("CMYK", (2, 2), (0, 0, 0, 255))
    assert (_rgb(black) == 0).all()


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_sixteen_bit_is_scaled_not_clipped(mode: str) -> None:
    eight = np.arange(256, dtype=np.uint16).reshape(16, 16)
    wide = eight * 257  # the exact 16-bit counterpart of each 8-bit level
    if mode == "I":
        img = Image.fromarray(wide.astype(np.int32))
    else:
        img = Image.frombytes(mode, (16, 16), wide.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    assert img.mode == mode
    arr = _rgb(img)
    np.testing.assert_array_equal(arr[..., 0], eight)
    mid = Image.fromarray(np.full((2, 2), 32768, dtype=np.uint16))
    assert (_rgb(mid) == 128).all()  # not 255, as clipping would give


def test_float_images() -> None:
    unit = Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4))
    arr = _rgb(unit)
    assert arr.min() == 0 and arr.max() == 255
    byte_range = Image.fromarray(np.full((2, 2), 100.0, dtype=np.float32))
    assert (_rgb(byte_range) == 100).all()


def test_sixteen_bit_png_file_round_trip(tmp_path: Path) -> None:
    photo = np.asarray(_photo(300, 240).convert("L")).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(photo * 257).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(open_image(path))[..., 0], photo)


# ----------------------------------------------------------------------------------------- EXIF


def _jpeg(img: Image.Image, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_exif_orientation_is_applied() -> None:
    upright = _photo(320, 240)
    # Stored rotated 90 degrees counter-clockwise; orientation 6 tells viewers to turn it clockwise.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    decoded = open_image(_jpeg(stored, orientation=6))
    assert decoded.size == upright.size
    plain = open_image(_jpeg(upright))
    a, b = preprocess_image(decoded), preprocess_image(plain)
    assert np.abs(a - b).mean() < 0.05  # the same picture up to JPEG re-encoding
    unturned = preprocess_image(open_image(_jpeg(stored)).resize(upright.size))
    assert np.abs(unturned - b).mean() > 5 * np.abs(a - b).mean()


# ----------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_preprocess_error(tmp_path: Path) -> None:
    good = _jpeg(_photo(64, 64))
    cases = {
        "empty": b"",
        "text": b"hello, I am not an image\n" * 10,
        "truncated": good[: len(good) // 2],
        "header only": good[:200],
    }
    for name, data in cases.items():
        with pytest.raises(PreprocessError):
            preprocess_bytes(data)
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        with pytest.raises(PreprocessError):
            preprocess_path(path)


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        preprocess_path(tmp_path / "missing.jpg")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 megapixels in a few kilobytes
    assert path.stat().st_size < 1 << 20
    with pytest.raises(PreprocessError, match="decompression bomb"):
        open_image(path)
    with pytest.raises(PreprocessError, match="decompression bomb"):
        open_image(_jpeg(_photo(64, 64)), max_pixels=1000)
    assert open_image(_jpeg(_photo(64, 64)), max_pixels=64 * 64).size == (64, 64)


def test_default_limit_is_pillows() -> None:
    from resnext_triton.preprocess import DEFAULT_MAX_PIXELS

    assert DEFAULT_MAX_PIXELS == 89_478_485 == 1024 * 1024 * 1024 // 4 // 3
