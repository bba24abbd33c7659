"""The classify command line without a server: help, usage errors, server down, torch-free imports."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
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
