"""What the client classifies: files, directories, globs, http(s) URLs, bytes and PIL images.

:func:`expand_inputs` turns command-line arguments into a lazy stream of :class:`Source` objects
(directories are walked recursively, in sorted order); :func:`load_source` reads one of them and
decodes it into an upright 8-bit RGB PIL image, raising an :class:`~.errors.InputError` that
belongs to that input alone. URLs are downloaded by :func:`.fetch.fetch_url`.
"""

from __future__ import annotations

import contextlib
import enum
import glob
import io
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image

from resnext_triton.client.errors import INPUT_ERRORS, FetchError
from resnext_triton.client.fetch import DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_URL_TIMEOUT_S, fetch_url
from resnext_triton.preprocess import DEFAULT_MAX_PIXELS, open_image, to_rgb, upright

logger = logging.getLogger(__name__)

_GLOB_MAGIC = re.compile(r"[*?\[]")
_NOT_REGULAR = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


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

    Only regular files whose extension Pillow can open are listed (a file named on the command
    line is taken whatever its name). Symbolic links are followed, except one that leads back to
    a directory the walk is already inside (a loop): it is skipped with a warning, as is a
    directory or an entry that cannot be read; everything else is still listed.
    """
    yield from _walk(os.fspath(root), image_extensions(), frozenset())


def _walk(directory: str, extensions: frozenset[str], ancestors: frozenset[tuple[int, int]]) -> Iterator[Path]:
    try:
        info = os.stat(directory)
        if (info.st_dev, info.st_ino) in ancestors:
            logger.warning("skipping %s: a symbolic link loop (it leads back to a directory above it)", directory)
            return
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        logger.warning("skipping directory %s: %s", directory, exc.strerror or exc)
        return
    inside = ancestors | {(info.st_dev, info.st_ino)}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
            is_file = not is_dir and entry.is_file()
        except OSError as exc:  # e.g. a symbolic link to itself
            logger.warning("skipping %s: %s", entry.path, exc.strerror or exc)
            continue
        if is_dir:
            yield from _walk(entry.path, extensions, inside)
        elif is_file and os.path.splitext(entry.name)[1].lower() in extensions:
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
        _check_regular_file(source.path)
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
        _check_regular_file(source.path)
        with open(source.path, "rb") as f:
            data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FetchError(f"file larger than {max_bytes:,} bytes: {source.path}")
    return data


def _check_regular_file(path: Path) -> None:
    """Refuse what is not a regular file before opening it (reading a FIFO would block).

    Raises:
        FetchError: for a directory, a FIFO, a socket or a device.
        OSError: if the path cannot be examined.
    """
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise FetchError(f"is a directory: {path}")
    if not stat.S_ISREG(mode):
        kind = _NOT_REGULAR.get(stat.S_IFMT(mode), "a special file")
        raise FetchError(f"not a regular file ({kind}): {path}")


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
