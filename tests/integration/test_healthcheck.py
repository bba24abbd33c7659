"""The container health check against a real Triton: true when a Python stub dies, SIGTERM after N failures."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time

import pytest

from resnext_triton.triton.healthcheck import main, tiny_png
from resnext_triton.triton.local import LocalTriton, ServerConfig, procs
from resnext_triton.triton.local.state import VIEW_DIR

pytestmark = pytest.mark.integration

PRE = "resnext101_32x4d_preprocess"


def test_tiny_png_is_an_image():
    from PIL import Image

    img = Image.open(io.BytesIO(tiny_png()))
    assert img.size == (8, 8) and img.mode == "RGB"


def test_healthy_server_passes_and_a_broken_model_counts_failures(triton_server, tmp_path):
    state = tmp_path / "health"
    assert main(["--url", triton_server.http_url, "--state", str(state)]) == 0
    assert state.read_text() == "0"
    victim = subprocess.Popen(["sleep", "60"])
    try:
        args = ["--url", triton_server.http_url, "--model", "no_such_model", "--state", str(state),
                "--kill-after", "2", "--pid", str(victim.pid)]
        assert main(args) == 1 and victim.poll() is None and state.read_text() == "1"
        assert main(args) == 1 and state.read_text() == "2"
        assert victim.wait(timeout=10) == -signal.SIGTERM  # the restart policy's cue
    finally:
        victim.kill()
    assert main(["--url", "http://127.0.0.1:9", "--state", str(state), "--kill-after", "0"]) == 1


def test_a_dead_python_stub_is_unhealthy_while_triton_still_says_ready(exported_repo, tmp_path):
    config = ServerConfig(repo=exported_repo.path, state_dir=tmp_path / "state", http_port=0, grpc_port=0,
                          metrics_port=0, timeout_s=300, models=(PRE,))
    with LocalTriton(config) as server:
        state = tmp_path / "health"
        assert main(["--url", server.http_url, "--state", str(state)]) == 0
        (stub,) = [s for s in procs.stubs(config.state_dir, config.state_dir / VIEW_DIR) if s.model == PRE]
        os.kill(stub.pid, signal.SIGKILL)
        time.sleep(0.5)
        # Triton 2.51 may still answer /v2/health/ready here (the local supervisor repairs it within
        # seconds; Docker has no such supervisor); the inference in the check does not pass
        assert main(["--url", server.http_url, "--state", str(state), "--kill-after", "0"]) == 1
        assert state.read_text() == "1"
