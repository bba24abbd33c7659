"""Start, stop and query the local Triton of a state directory (one server per state directory)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from resnext_triton.triton.local.errors import ServerError, StartTimeoutError, failure_from_log
from resnext_triton.triton.local.install import check_dependencies, find_installation, prepare_backends, server_env
from resnext_triton.triton.local.launch import ServerConfig, build_command, check_ports, choose_models
from resnext_triton.triton.local.probes import is_ready, model_states, server_version
from resnext_triton.triton.local.state import (
    LOG_FILE,
    TOKEN_FILE,
    ServerState,
    default_state_dir,
    locked,
    log_tail,
    repository_token,
    running_state,
)
from resnext_triton.triton.process import pid_alive

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT_S = 45.0


@dataclass
class StartResult:
    """A started (or already running) server."""

    state: ServerState
    already_running: bool
    model_states: dict[str, str]


def start(config: ServerConfig) -> StartResult:
    """Start Triton for ``config.state_dir`` and wait until it is ready.

    Idempotent: if a server started from this state directory still runs, it is returned (and
    waited for, if it is still starting) instead of starting another.

    Raises:
        DependencyError: tritonserver or a library it links is missing.
        PortInUseError: a port is taken.
        NoModelsError: nothing in the repository can be served here.
        ModelLoadError: a model failed to load (the server is stopped).
        ServerExitedError: the server exited for another reason.
        StartTimeoutError: not ready within ``config.timeout_s`` (the server is stopped).
    """
    state_dir = config.state_dir.resolve()
    config = replace(config, state_dir=state_dir, repo=config.repo.resolve())
    with locked(state_dir):
        existing = running_state(state_dir)
        if existing is not None:
            log.info("Triton already runs for %s (pid %d)", state_dir, existing.pid)
            _wait_ready(existing, None, config.timeout_s)
            return StartResult(existing, True, model_states(existing, repository_token(state_dir)))
        return _start_new(config)


def _rotate_log(path: Path) -> None:
    if path.exists() and path.stat().st_size:
        os.replace(path, path.with_name(path.name + ".1"))


def _start_new(config: ServerConfig) -> StartResult:
    install = find_installation()
    env = server_env(install)
    check_dependencies(install, env)
    models, skipped = choose_models(config)
    config = config.with_free_ports()
    check_ports(config)
    backends = prepare_backends(config.state_dir, install)
    token = repository_token(config.state_dir)
    log_file = config.state_dir / LOG_FILE
    _rotate_log(log_file)
    cmd = build_command(config, install, backends, models, token)
    log.debug("starting %s", " ".join(c.replace(token, "***") for c in cmd))
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=config.state_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the CLI; its own process group (stubs included)
        )
    state = ServerState(
        pid=proc.pid,
        host=config.host,
        http_port=config.http_port,
        grpc_port=config.grpc_port,
        metrics_port=config.metrics_port,
        repo=str(config.repo),
        log_file=str(log_file),
        state_dir=str(config.state_dir),
        started_at=time.time(),
        models=models,
        skipped=skipped,
    )
    state.save()
    log.info("started tritonserver (pid %d), loading %s", proc.pid, ", ".join(models))
    try:
        _wait_ready(state, proc, config.timeout_s)
    except ServerError:
        _terminate(state, DEFAULT_STOP_TIMEOUT_S, proc)
        raise
    state = replace(state, version=server_version(state.http_url))
    state.save()
    return StartResult(state, False, model_states(state, token))


def _running(state: ServerState, proc: subprocess.Popen[bytes] | None) -> bool:
    return proc.poll() is None if proc is not None else pid_alive(state.pid)


def _wait_ready(state: ServerState, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        if not _running(state, proc):
            state.forget()
            raise failure_from_log(Path(state.log_file), state.models)
        if is_ready(state.http_url):
            return
        if time.monotonic() >= deadline:
            raise StartTimeoutError(
                f"Triton was not ready after {timeout_s:.0f} s (raise --timeout on a slow host)",
                log_tail=log_tail(state.log_file),
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def _terminate(state: ServerState, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the server (Triton unloads its models and stops its stubs), SIGKILL its group after the timeout."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _running(state, proc):
            break
        time.sleep(0.2)
    else:
        log.warning("tritonserver (pid %d) did not stop within %.0f s; killing it", state.pid, timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(state.pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=10)
    # Stubs of a killed server would otherwise linger in its process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(state.pid, signal.SIGKILL)
    state.forget()


def stop(state_dir: Path | None = None, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> ServerState | None:
    """Stop the server a state directory started.

    Returns:
        The state of the server that was stopped, or None if none was running.
    """
    state_dir = (state_dir or default_state_dir()).resolve()
    with locked(state_dir):
        state = running_state(state_dir)
        if state is None:
            return None
        log.info("stopping tritonserver (pid %d)", state.pid)
        _terminate(state, timeout_s)
        return state


@dataclass
class ServerStatus:
    """What ``status`` reports."""

    state: ServerState | None
    ready: bool = False
    model_states: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        """True if the server process runs."""
        return self.state is not None


def status(state_dir: Path | None = None) -> ServerStatus:
    """Whether the server of a state directory runs, is ready, and which models are loaded."""
    state_dir = (state_dir or default_state_dir()).resolve()
    state = running_state(state_dir)
    if state is None:
        return ServerStatus(None)
    ready = is_ready(state.http_url)
    token_path = state_dir / TOKEN_FILE
    token = token_path.read_text(encoding="utf-8").strip() if token_path.is_file() else None
    return ServerStatus(state, ready, model_states(state, token) if ready else {})
