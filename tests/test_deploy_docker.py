"""deploy.sh's docker mode against a scripted fake `docker` on PATH (no Docker engine runs here).

The fake logs every call and answers `info`, `compose ... run` (the export job), `compose ... ps -q`
and `inspect` from files the test writes, so GPU detection, the export job's time limit and exit
status, crash-loop detection and the weights mount are checked as deploy.sh really runs them.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy.sh"
COMPOSE_FILE = ROOT / "docker-compose.yml"

FAKE_DOCKER = r"""#!/usr/bin/env bash
dir="$(dirname "$0")"
printf '%s\n' "$*" >> "$dir/calls.log"
env | grep -E '^(RESNEXT_|TRITON_)' | sort > "$dir/last-env.txt"
case "$1" in
  info)
    [ -f "$dir/no-engine" ] && exit 1
    cat "$dir/info.txt"
    exit 0
    ;;
  inspect)
    # one line of "status restarts health" per call; the last one repeats
    line="$(head -n 1 "$dir/inspect.txt")"
    [ "$(wc -l < "$dir/inspect.txt")" -gt 1 ] && sed -i 1d "$dir/inspect.txt"
    echo "$line"
    exit 0
    ;;
  rm) exit 0 ;;
  compose)
    case " $* " in
      *" run "*)
        if [ -f "$dir/export-sleep" ]; then sleep "$(cat "$dir/export-sleep")"; fi
        exit "$(cat "$dir/export-exit" 2>/dev/null || echo 0)"
        ;;
      *" ps -q "*) echo "0123456789ab"; exit 0 ;;
      *" logs "*) echo "triton  | E1125 engine plan file is not compatible"; exit 0 ;;
    esac
    exit 0
    ;;
esac
exit 0
"""


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """A directory holding the fake `docker` and its script files; first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    runtimes = '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}'
    (bin_dir / "info.txt").write_text(f"{runtimes} null null\n")
    (bin_dir / "inspect.txt").write_text("running 0 starting\nrunning 0 healthy\n")
    return bin_dir


@pytest.fixture
def env(tmp_path: Path, fake: Path) -> dict[str, str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRITON_", "RESNEXT_", "EXPORT_"))}
    return {
        **clean,
        # the fake first; no curl (the endpoint listing then says so instead of calling out)
        "PATH": f"{fake}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "RESNEXT_TRITON_STATE_DIR": str(tmp_path / "state"),
        "RESNEXT_TRITON_MODEL_REPOSITORY": str(repo),
    }


def deploy(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEPLOY), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def calls(fake: Path) -> list[str]:
    return (fake / "calls.log").read_text().splitlines()


def test_gpu_found_through_the_nvidia_runtime_means_docker_mode(env, fake):
    result = deploy("up", "--weights", "random", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert f"+ timeout 1800 docker compose -f {COMPOSE_FILE} run --rm --name resnext-triton-export-" in result.stdout
    assert f"+ docker compose -f {COMPOSE_FILE} up -d --no-deps triton" in result.stdout
    assert "export.py" not in result.stdout  # the compose export job does the export


def test_gpu_found_through_the_toolkit_hook_without_a_registered_runtime(env, fake):
    """The engine's built-in nvidia device driver needs only the toolkit's hook (finding 9)."""
    (fake / "info.txt").write_text('{"runc":{"path":"runc"}} null null\n')
    local = deploy("up", "--dry-run", env=env)
    assert "docker compose" not in local.stdout  # no runtime, no hook: local mode
    hook = fake / "nvidia-container-runtime-hook"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    result = deploy("up", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "up -d --no-deps triton" in result.stdout


def test_gpu_found_through_cdi_devices(env, fake):
    devices = '[{"Source":"cdi","ID":"nvidia.com/gpu=all"}]'
    (fake / "info.txt").write_text(f'{{"runc":{{"path":"runc"}}}} ["/etc/cdi"] {devices}\n')
    assert "up -d --no-deps triton" in deploy("up", "--dry-run", env=env).stdout


def test_forced_docker_without_gpus_or_engine_is_an_error(env, fake):
    (fake / "info.txt").write_text('{"runc":{"path":"runc"}} null null\n')
    result = deploy("up", "--docker", "--dry-run", env=env)
    assert result.returncode == 1 and "cannot hand out NVIDIA GPUs" in result.stderr
    (fake / "no-engine").touch()
    result = deploy("up", "--docker", env=env)
    assert result.returncode == 1 and "no Docker engine answers" in result.stderr


def test_healthy_start_exports_first_then_waits_for_health(env, fake):
    result = deploy("up", "--docker", "--timeout", "60", env=env)
    assert result.returncode == 0, result.stderr
    log = calls(fake)
    run = next(i for i, c in enumerate(log) if " run --rm " in c)
    up = next(i for i, c in enumerate(log) if " up -d --no-deps triton" in c)
    assert run < up and sum(c.startswith("inspect") for c in log) == 2
    assert "Triton is ready" in result.stdout and "http://127.0.0.1:8000" in result.stdout
    sent = (fake / "last-env.txt").read_text()
    assert f"RESNEXT_UID={os.getuid()}" in sent and f"RESNEXT_GID={os.getgid()}" in sent  # finding 8
    assert "TOKEN" not in sent  # no admin token exists in docker mode any more
    assert Path(env["RESNEXT_TRITON_MODEL_REPOSITORY"]).is_dir()
    assert Path(env["HOME"], ".cache", "resnext_triton").is_dir()  # made by the user, not by Docker as root


def test_crash_loop_is_reported_at_the_first_restart(env, fake):
    (fake / "inspect.txt").write_text("running 0 starting\nrestarting 1 starting\n")
    result = deploy("up", "--docker", "--timeout", "600", env=env, timeout=30)
    assert result.returncode == 1
    assert "restarted 1 time(s) (crash loop)" in result.stderr
    assert "engine plan file is not compatible" in result.stderr  # the logs are shown


def test_exited_container_is_reported(env, fake):
    (fake / "inspect.txt").write_text("exited 0 unhealthy\n")
    result = deploy("up", "--docker", env=env, timeout=30)
    assert result.returncode == 1 and "the triton container exited" in result.stderr


def test_timeout_covers_the_export_job(env, fake):
    """--timeout is a total limit: a hanging export job is stopped within it (finding 6)."""
    (fake / "export-sleep").write_text("30")
    result = deploy("up", "--docker", "--timeout", "2", env=env, timeout=25)
    assert result.returncode == 1
    assert "did not finish within --timeout 2 s" in result.stderr
    assert any(c.startswith("rm -f resnext-triton-export-") for c in calls(fake))
    assert not any(" up -d " in c for c in calls(fake))


def test_failed_export_stops_before_triton(env, fake):
    (fake / "export-exit").write_text("3")
    result = deploy("up", "--docker", env=env)
    assert result.returncode == 1 and "the export job failed (exit 3)" in result.stderr
    assert not any(" up -d " in c for c in calls(fake))


def test_weights_path_is_mounted_into_the_export_job(env, fake, tmp_path):
    """Finding 7: a host checkpoint reaches the container; a missing one is refused up front."""
    missing = deploy("up", "--docker", "--weights", str(tmp_path / "nope.pth"), env=env)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    ckpt = tmp_path / "my weights.pth"
    ckpt.write_bytes(b"x")
    result = deploy("up", "--docker", "--weights", str(ckpt), env=env)
    assert result.returncode == 0, result.stderr
    sent = (fake / "last-env.txt").read_text().splitlines()
    assert f"RESNEXT_WEIGHTS_FILE={ckpt}" in sent
    assert "RESNEXT_WEIGHTS=/weights/my weights.pth" in sent and "RESNEXT_WEIGHTS_NAME=my weights.pth" in sent


def test_stop_status_logs_go_through_compose(env, fake):
    assert f"+ docker compose -f {COMPOSE_FILE} down" in deploy("stop", "--docker", "--dry-run", env=env).stdout
    assert f"+ docker compose -f {COMPOSE_FILE} ps -a" in deploy("status", "--docker", "--dry-run", env=env).stdout
    logs = deploy("logs", "--docker", "-n", "7", "--dry-run", env=env).stdout
    assert f"+ docker compose -f {COMPOSE_FILE} logs --tail 7 export triton" in logs
