"""Input expansion (files, directories, globs, URLs) and reading, with a loopback HTTP server."""

from __future__ import annotations

import http.server
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from resnext_triton.client.errors import FetchError, PreprocessError
from resnext_triton.client.inputs import (
    Source,
    SourceKind,
    expand_inputs,
    fetch_url,
    is_url,
    load_source,
    load_source_bytes,
)


def _png(color: tuple[int, int, int] = (10, 200, 30), size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "z.png").write_bytes(_png())
    (tmp_path / "a" / "y.JPG").write_bytes(_png())
    (tmp_path / "a" / "b" / "x.webp").write_bytes(_png())
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden" / "h.png").write_bytes(_png())
    (tmp_path / ".dot.png").write_bytes(_png())
    return tmp_path


def _names(sources: Iterator[Source], root: Path) -> list[str]:
    return [str(Path(s.name).relative_to(root)) if s.kind is SourceKind.FILE else f"!{s.kind.value}" for s in sources]


def test_directories_are_walked_recursively_sorted_images_only(tree: Path) -> None:
    assert _names(expand_inputs([str(tree)]), tree) == ["a/b/x.webp", "a/y.JPG", "z.png"]


def test_explicit_files_are_taken_whatever_their_extension(tree: Path) -> None:
    assert _names(expand_inputs([str(tree / "a" / "notes.txt")]), tree) == ["a/notes.txt"]


def test_globs_expand_sorted_and_recursive(tree: Path) -> None:
    assert _names(expand_inputs([str(tree / "*.png")]), tree) == ["z.png"]
    assert _names(expand_inputs([str(tree / "**" / "*.*")]), tree) == [
        "a/b/x.webp",
        "a/notes.txt",
        "a/y.JPG",
        "z.png",
    ]
    assert _names(expand_inputs([str(tree / "a*")]), tree) == ["a/b/x.webp", "a/y.JPG"]  # a matched directory


def test_arguments_that_name_nothing_become_invalid_sources(tree: Path) -> None:
    sources = list(expand_inputs([str(tree / "nope.jpg"), str(tree / "*.gif"), str(tree / "a" / "b"), "x"]))
    kinds = [s.kind for s in sources]
    assert kinds == [SourceKind.INVALID, SourceKind.INVALID, SourceKind.FILE, SourceKind.INVALID]
    assert "no such file" in (sources[0].error or "")
    assert "no files match" in (sources[1].error or "")
    empty = tree / "empty"
    empty.mkdir()
    (only,) = expand_inputs([str(empty)])
    assert only.kind is SourceKind.INVALID and "no image files" in (only.error or "")
    with pytest.raises(FetchError, match="no such file"):
        load_source(sources[0])


def test_order_is_kept_across_kinds(tree: Path) -> None:
    args = ["http://127.0.0.1:9/a.png", str(tree / "z.png"), "https://example.invalid/b.jpg"]
    assert [s.kind for s in expand_inputs(args)] == [SourceKind.URL, SourceKind.FILE, SourceKind.URL]
    assert is_url("HTTPS://x") and not is_url("ftp://x") and not is_url("photo.jpg")


def test_expansion_is_lazy(tree: Path) -> None:
    def args() -> Iterator[str]:
        yield str(tree / "z.png")
        raise AssertionError("pulled too far")

    it = expand_inputs(args())
    assert next(it).name.endswith("z.png")


def test_source_of_library_inputs(tree: Path) -> None:
    img = Image.new("L", (4, 4))
    assert Source.of(img, 3).kind is SourceKind.IMAGE and Source.of(img, 3).name == "<image 3>"
    assert Source.of(b"abc", 1).kind is SourceKind.BYTES
    assert Source.of(tree / "z.png").kind is SourceKind.FILE
    assert Source.of("http://127.0.0.1/x.png").kind is SourceKind.URL
    assert load_source(Source.of(img)).mode == "RGB"
    assert load_source(Source.of(_png())).size == (8, 6)


def test_load_source_errors(tree: Path) -> None:
    (tree / "zero.jpg").write_bytes(b"")
    with pytest.raises(PreprocessError, match="empty"):
        load_source(Source.file(tree / "zero.jpg"))
    with pytest.raises(PreprocessError, match="not an image"):
        load_source(Source.file(tree / "a" / "notes.txt"))
    with pytest.raises(FetchError, match="directory"):
        load_source(Source.file(tree / "a"))
    with pytest.raises(FetchError, match="no such file"):
        load_source(Source.file(tree / "gone.png"))


def test_a_symlink_loop_is_skipped_with_a_warning_and_the_rest_is_listed(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tree / "a" / "b" / "up").symlink_to("..")  # a/b/up -> a: the walk would go round forever
    (tree / "a" / "self.png").symlink_to("self.png")  # a link to itself cannot even be examined
    (tree / "a" / "b" / "photos").symlink_to(tree / "a" / "b")  # leads to the directory it sits in
    with caplog.at_level("WARNING", logger="resnext_triton.client.inputs"):
        names = _names(expand_inputs([str(tree)]), tree)
    assert names == ["a/b/x.webp", "a/y.JPG", "z.png"]
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert warnings == [
        f"skipping {tree}/a/b/photos: a symbolic link loop (it leads back to a directory above it)",
        f"skipping {tree}/a/b/up: a symbolic link loop (it leads back to a directory above it)",
        f"skipping {tree}/a/self.png: Too many levels of symbolic links",
    ]


def test_a_directory_reached_twice_without_a_loop_is_still_walked(tree: Path) -> None:
    (tree / "again").symlink_to(tree / "a" / "b")
    assert _names(expand_inputs([str(tree)]), tree) == ["a/b/x.webp", "a/y.JPG", "again/x.webp", "z.png"]


@pytest.mark.parametrize("loader", [load_source, load_source_bytes])
def test_a_fifo_is_not_a_regular_file_and_is_never_opened(tree: Path, loader: object) -> None:
    fifo = tree / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^not a regular file \(a FIFO\): .*pipe\.jpg$"):
        loader(Source.file(fifo))  # type: ignore[operator]
    assert time.monotonic() - started < 1
    assert "pipe.jpg" not in _names(expand_inputs([str(tree)]), tree)  # the walk lists regular files only


# ----------------------------------------------------------------------------------------- URLs


class _Handler(http.server.BaseHTTPRequestHandler):
    payloads: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        if self.path == "/slow.png":
            time.sleep(3)
        body = self.payloads.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    _Handler.payloads = {"/ok.png": _png((255, 0, 0)), "/slow.png": _png(), "/text.png": b"<html>nope</html>"}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_url_is_downloaded_and_decoded(http_base: str) -> None:
    img = load_source(Source.url(f"{http_base}/ok.png"))
    assert np.asarray(img)[0, 0].tolist() == [255, 0, 0]


def test_url_errors_are_per_input(http_base: str) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        load_source(Source.url(f"{http_base}/missing.png"))
    with pytest.raises(PreprocessError, match="not an image"):
        load_source(Source.url(f"{http_base}/text.png"))
    with pytest.raises(FetchError, match="larger than"):
        fetch_url(f"{http_base}/ok.png", max_bytes=10)


def test_slow_url_times_out(http_base: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        load_source(Source.url(f"{http_base}/slow.png"), url_timeout_s=0.5)
    assert time.monotonic() - started < 2.5


def test_unreachable_url_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="unreachable"):
        load_source(Source.url(f"http://127.0.0.1:{free_port()}/x.png"), url_timeout_s=2)
    assert time.monotonic() - started < 2
