"""What the client classifies: files, directories, globs, http(s) URLs, bytes and PIL images.

:func:`expand_inputs` turns command-line arguments into a lazy stream of :class:`Source` objects
(directories are walked recursively, in sorted order); :func:`load_source` reads one of them and
decodes it into an upright 8-bit RGB PIL image, raising an :class:`~.errors.InputError` that
belongs to that input alone.
"""

from __future__ import annotations

import contextlib
import enum
import glob
import io
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image

from resnext_triton import __version__
from resnext_triton.client.errors import INPUT_ERRORS, FetchError
from resnext_triton.preprocess import DEFAULT_MAX_PIXELS, open_image, to_rgb, upright

DEFAULT_URL_TIMEOUT_S = 5.0
"""Seconds allowed to fetch one URL (connect, and the whole download)."""
DEFAULT_MAX_DOWNLOAD_BYTES = 64 << 20
"""The largest download accepted from a URL (64 MiB)."""

_GLOB_MAGIC = re.compile(r"[*?\[]")
_USER_AGENT = f"resnext-triton-client/{__version__}"


class SourceKind(enum.Enum):
    """Where an input's bytes come from."""

    FILE = "file"
    URL = "url"
    BYTES = "bytes"
    IMAGE = "image"
    INVALID = "invalid"  # an argument that named nothing (no such path, a glob without matches)


@dataclass(frozen=True)
class Source:
    """One input to classify, with the name it is reported under."""

    name: str
    kind: SourceKind
    path: Path | None = None
    data: bytes | None = None
    image: Image.Image | None = None
    error: str | None = None

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> Source:
        """A local file."""
        return cls(name=os.fspath(path), kind=SourceKind.FILE, path=Path(path))

    @classmethod
    def url(cls, url: str) -> Source:
        """An http(s) URL."""
        return cls(name=url, kind=SourceKind.URL)

    @classmethod
    def invalid(cls, name: str, error: str) -> Source:
        """An argument that names no input; it is reported as failed with ``error``."""
        return cls(name=name, kind=SourceKind.INVALID, error=error)

    @classmethod
    def of(cls, item: Source | str | os.PathLike[str] | bytes | Image.Image, index: int = 0) -> Source:
        """Coerce what a library caller passes: a Source, path, URL, encoded bytes or PIL image."""
        if isinstance(item, Source):
            return item
        if isinstance(item, Image.Image):
            return cls(name=f"<image {index}>", kind=SourceKind.IMAGE, image=item)
        if isinstance(item, (bytes, bytearray, memoryview)):
            return cls(name=f"<bytes {index}>", kind=SourceKind.BYTES, data=bytes(item))
        if isinstance(item, str) and is_url(item):
            return cls.url(item)
        return cls.file(item)


def is_url(text: str) -> bool:
    """Whether an argument is an http(s) URL."""
    return text.lower().startswith(("http://", "https://"))


@cache
def image_extensions() -> frozenset[str]:
    """The file extensions (lower case, with the dot) that Pillow can open."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def walk_images(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Image files under a directory, recursively, in sorted order; hidden entries are skipped.

    Only files whose extension Pillow can open are listed (a file named on the command line is
    taken whatever its name).
    """
    extensions = image_extensions()
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from walk_images(entry.path)
        elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in extensions:
            yield Path(entry.path)


def _expand_dir(path: str) -> Iterator[Source]:
    found = False
    for image in walk_images(path):
        found = True
        yield Source.file(image)
    if not found:
        yield Source.invalid(path, f"no image files under directory {path}")


def expand_inputs(args: Iterable[str]) -> Iterator[Source]:
    """Expand command-line arguments into sources, lazily and in order.

    An http(s) URL is taken as is; a directory is walked recursively (image extensions only); an
    existing path is taken whatever its extension; otherwise an argument with ``*``, ``?`` or ``[``
    is a glob (``**`` recurses; matched directories are walked). An argument that names nothing
    becomes an invalid source, reported as that input's error.
    """
    for arg in args:
        if is_url(arg):
            yield Source.url(arg)
        elif os.path.isdir(arg):
            yield from _expand_dir(arg)
        elif os.path.lexists(arg):
            yield Source.file(arg)
        elif _GLOB_MAGIC.search(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                yield Source.invalid(arg, f"no files match {arg}")
            for match in matches:
                if os.path.isdir(match):
                    yield from _expand_dir(match)
                else:
                    yield Source.file(match)
        else:
            yield Source.invalid(arg, f"no such file or directory: {arg}")


def fetch_url(
    url: str, *, timeout_s: float = DEFAULT_URL_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
) -> bytes:
    """Download a URL within ``timeout_s`` seconds in all, at most ``max_bytes`` bytes.

    Raises:
        FetchError: on an HTTP error status, an unreachable host, a timeout or a too-large body.
    """
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"download larger than {max_bytes:,} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"download took longer than {timeout_s:g} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise FetchError(f"URL unreachable: timed out after {timeout_s:g} s") from exc
        raise FetchError(f"URL unreachable: {reason}") from exc
    except TimeoutError as exc:
        raise FetchError(f"URL timed out after {timeout_s:g} s") from exc
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot fetch URL: {exc}") from exc


def load_source(
    source: Source,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    url_timeout_s: float = DEFAULT_URL_TIMEOUT_S,
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> Image.Image:
    """Read and decode one source into an upright 8-bit RGB image.

    Raises:
        InputError: (a :class:`FetchError` or :class:`~.errors.PreprocessError`) if this input
            cannot be read or is not a usable image.
    """
    if source.kind is SourceKind.INVALID:
        raise FetchError(source.error or "invalid input")
    if source.kind is SourceKind.IMAGE:
        if source.image is None:
            raise FetchError("no image given")
        return to_rgb(upright(source.image))
    if source.kind is SourceKind.URL:
        data = fetch_url(source.name, timeout_s=url_timeout_s, max_bytes=max_download_bytes)
        return open_image(data, max_pixels=max_pixels)
    if source.kind is SourceKind.BYTES:
        return open_image(source.data or b"", max_pixels=max_pixels)
    if source.path is None:
        raise FetchError("no path given")
    with _file_errors(source.path):
        return open_image(source.path, max_pixels=max_pixels)


def load_source_bytes(
    source: Source,
    *,
    url_timeout_s: float = DEFAULT_URL_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> bytes:
    """The encoded file of one source, as the image pipeline on the server takes it (not decoded here).

    An in-memory PIL image is encoded as PNG (lossless).

    Raises:
        FetchError: if this input cannot be read, is not a regular file, or exceeds ``max_bytes``.
    """
    if source.kind is SourceKind.INVALID:
        raise FetchError(source.error or "invalid input")
    if source.kind is SourceKind.IMAGE:
        if source.image is None:
            raise FetchError("no image given")
        buf = io.BytesIO()
        upright(source.image).save(buf, "PNG")
        return buf.getvalue()
    if source.kind is SourceKind.URL:
        return fetch_url(source.name, timeout_s=url_timeout_s, max_bytes=max_bytes)
    if source.kind is SourceKind.BYTES:
        return source.data or b""
    if source.path is None:
        raise FetchError("no path given")
    with _file_errors(source.path):
        if not source.path.is_file():
            raise FetchError(f"not a regular file: {source.path}")
        with open(source.path, "rb") as f:
            data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FetchError(f"file larger than {max_bytes:,} bytes: {source.path}")
    return data


@contextlib.contextmanager
def _file_errors(path: Path) -> Iterator[None]:
    """Turn the OS's errors about reading ``path`` into this input's :class:`FetchError`."""
    try:
        yield
    except INPUT_ERRORS:
        raise
    except IsADirectoryError as exc:
        raise FetchError(f"is a directory: {path}") from exc
    except FileNotFoundError as exc:
        raise FetchError(f"no such file: {path}") from exc
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
