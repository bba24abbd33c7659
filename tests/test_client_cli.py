"""The classify command line without a server: help, usage errors, server down, torch-free imports."""

from __future__ import annotations

import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from resnext_triton.client import ServerUnavailable, TritonClassifier
from resnext_triton.client.cli import EXIT_SERVER, EXIT_USAGE, build_parser, main
from resnext_triton.client.transport import normalize_url

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "client" / "classify.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_help_documents_defaults_alpha_and_exit_codes() -> None:
    text = build_parser().format_help()
    for needle in ("grpc", "127.0.0.1:8001", "127.0.0.1:8000", "--server-topk", "logits", "WHITE", "exit status"):
        assert needle in text, needle
    assert "  0  every input" in text and "  1  some inputs failed" in text and "  3  server" in text


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["a.jpg"])
    assert args.protocol == "grpc" and args.url is None and args.model is None
    assert args.top_k == 5 and args.batch_size is None and args.concurrency >= 1 and not args.json


@pytest.mark.parametrize("argv", [[], ["a.jpg", "-i", "ftp"], ["a.jpg", "-b", "0"], ["a.jpg", "--timeout", "-1"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_is_one_clear_message_within_the_timeout(protocol: str, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = main(
        [str(tmp_path / "x.jpg"), "-i", protocol, "-u", f"127.0.0.1:{free_port()}", "--timeout", "1.5"],
        out=out,
        err=err,
    )
    elapsed = time.monotonic() - started
    assert code == EXIT_SERVER
    assert elapsed < 1.5 + 1.0
    message = err.getvalue().strip()
    assert message.startswith("error: Triton server at 127.0.0.1:") and "not reachable after 1.5 s" in message
    assert "connection refused" in message
    assert "Traceback" not in message and len(message.splitlines()) == 1
    assert out.getvalue() == ""


class _NotTriton(http.server.BaseHTTPRequestHandler):
    """A web server that answers 200 and a page to every request."""

    def _page(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_web_server_that_is_not_triton_is_one_clear_message(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTriton)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main([str(tmp_path / "x.jpg"), "-i", "http", "-u", address, "--timeout", "2"], out=out, err=err)
    finally:
        server.shutdown()
        server.server_close()
    assert code == EXIT_SERVER and out.getvalue() == ""
    assert err.getvalue().startswith(f"error: the server at {address} does not answer like Triton (")
    assert len(err.getvalue().splitlines()) == 1


def test_library_raises_server_unavailable() -> None:
    with TritonClassifier(f"127.0.0.1:{free_port()}", "http", timeout_s=0.5) as clf, pytest.raises(ServerUnavailable):
        clf.wait_until_ready()
    with pytest.raises(ValueError, match="protocol"):
        TritonClassifier(protocol="ftp")


def test_url_normalization() -> None:
    assert normalize_url("http://127.0.0.1:8000/", "http") == "127.0.0.1:8000"
    assert normalize_url("localhost", "grpc") == "localhost:8001"
    assert normalize_url("grpc://host:9", "grpc") == "host:9"
    assert normalize_url("[::1]", "http") == "[::1]:8000"


def test_client_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import resnext_triton.client, resnext_triton.client.cli\n"
        "from resnext_triton.client import TritonClassifier\n"
        "import tritonclient.grpc, tritonclient.http, tqdm\n"
        "TritonClassifier('127.0.0.1:1', 'grpc'); TritonClassifier('127.0.0.1:1', 'http')\n"
        "from resnext_triton.client.cli import build_parser; build_parser().format_help()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'torchvision'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_launcher_runs_from_a_checkout_without_the_package_installed(tmp_path: Path) -> None:
    import numpy

    # -S skips site-packages' .pth files (the editable install); PYTHONPATH still gives the dependencies.
    env = dict(os.environ, PYTHONPATH=str(Path(numpy.__file__).parent.parent))
    probe = "import importlib.util; print(importlib.util.find_spec('resnext_triton'))"
    run = {"capture_output": True, "text": True, "timeout": 120, "check": False, "env": env, "cwd": tmp_path}
    assert subprocess.run([sys.executable, "-S", "-c", probe], **run).stdout.strip() == "None"  # type: ignore[call-overload]
    proc = subprocess.run([sys.executable, "-S", str(LAUNCHER), "--help"], **run)  # type: ignore[call-overload]
    assert proc.returncode == 0, proc.stderr
    assert "usage: classify.py" in proc.stdout and "exit status" in proc.stdout


def _checkout_without_venv(tmp_path: Path) -> Path:
    """A checkout with the launcher and the package sources, but no .venv."""
    root = tmp_path / "checkout"
    (root / "client").mkdir(parents=True)
    (root / "client" / "classify.py").write_bytes(LAUNCHER.read_bytes())
    (root / "src").symlink_to(ROOT / "src")
    return root


def _bare_python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Python without site-packages (-S): numpy, Pillow and tritonclient cannot be imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "RESNEXT_TRITON"))}
    return subprocess.run(
        [sys.executable, "-S", *args], capture_output=True, text=True, timeout=120, check=False, env=env, cwd=cwd
    )


def test_launcher_without_the_dependencies_says_what_to_run(tmp_path: Path) -> None:
    root = _checkout_without_venv(tmp_path)
    proc = _bare_python("client/classify.py", "photo.jpg", cwd=root)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(
        f"error: client/classify.py needs the project's dependencies, and {sys.executable} lacks "
    )
    assert f"python3 {root}/scripts/bootstrap.py" in proc.stderr
    assert f"`.venv/bin/python client/classify.py ...` from {root}" in proc.stderr


def test_launcher_without_the_dependencies_hands_over_to_the_checkouts_venv(tmp_path: Path) -> None:
    root = _checkout_without_venv(tmp_path)
    (root / ".venv").symlink_to(ROOT / ".venv")
    proc = _bare_python(str(root / "client" / "classify.py"), "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "usage: classify.py" in proc.stdout and "exit status" in proc.stdout
