"""Start, stop and query the supervised local Triton of a state directory (one per state directory).

``start`` checks what it can before launching (the installation, the models, the ports), starts
the supervisor (:mod:`.supervisor`) detached, and waits until the server that answers on the HTTP
port is the one this start launched (its ``--id``) and is ready. ``stop`` stops the supervisor,
which stops tritonserver; whatever a crash left behind (tritonserver, its stubs, their
``/dev/shm`` regions) is removed by ``stop`` and by the next ``start``. ``status`` checks health for
itself instead of trusting Triton's ready endpoint (:func:`health.check`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import resnext_triton
from resnext_triton.triton.local import health, probes, procs
from resnext_triton.triton.local.errors import StartTimeoutError, failure_from_log
from resnext_triton.triton.local.install import check_dependencies, find_installation, prepare_backends, server_env
from resnext_triton.triton.local.launch import ServerConfig, check_address, check_ports, choose_models
from resnext_triton.triton.local.state import (
    LAUNCH_FILE,
    LOG_FILE,
    READY,
    SUPERVISOR_MODULE,
    ServerState,
    default_state_dir,
    locked,
    log_tail,
    running_state,
    supervisor_alive,
)  # fmt: skip
from resnext_triton.triton.process import pid_alive

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT_S = 60.0
RECOVERING_PREFIX = "recovering: "  # how the supervisor marks a model it is reloading in server.json


@dataclass
class StartResult:
    """A started (or already running) server."""

    state: ServerState
    already_running: bool
    model_states: dict[str, str]


@dataclass
class StopResult:
    """What ``stop`` did: the server it stopped (None if none ran) and the leftovers it removed."""

    state: ServerState | None
    cleanup: procs.Cleanup


def start(config: ServerConfig) -> StartResult:
    """Start a supervised Triton for ``config.state_dir`` and wait until it is ready.

    Idempotent: if a supervisor of this state directory runs, its server is waited for and
    returned instead of starting another. Leftovers of a crashed server are removed first.

    Raises:
        DependencyError: tritonserver or a library it links is missing.
        AddressError: the address to bind to is not this host's.
        PortInUseError: a port is taken (before the start, or by another server while starting).
        NoModelsError: nothing in the repository can be served here.
        ModelLoadError: a model failed to load (nothing is left running).
        ServerExitedError: the server exited for another reason.
        StartTimeoutError: not ready within ``config.timeout_s`` (the server is stopped).
    """
    state_dir = config.state_dir.resolve()
    config = replace(config, state_dir=state_dir, repo=config.repo.resolve())
    with locked(state_dir):
        existing = running_state(state_dir)
        if existing is not None:
            log.info("Triton already runs for %s (supervisor pid %d)", state_dir, existing.supervisor_pid)
            state = _wait_ready(state_dir, None, config.timeout_s, existing.models)
            return StartResult(state, True, probes.model_states(state))
        _remove_stale(state_dir)
        return _start_new(config)


def _remove_stale(state_dir: Path) -> procs.Cleanup:
    stale = ServerState.load(state_dir)
    done = procs.cleanup(state_dir, stale.regions if stale else ())
    if stale is not None:
        stale.forget()
    if done:
        log.warning("removed what a crashed server of %s left: %s", state_dir, done.describe())
    return done


def _rotate_log(path: Path) -> None:
    if path.exists() and path.stat().st_size:
        os.replace(path, path.with_name(path.name + ".1"))


def _supervisor_env() -> dict[str, str]:
    """This environment, with this package importable (the supervisor runs it with ``-m``)."""
    env = dict(os.environ)
    src = str(Path(resnext_triton.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    return env


def _start_new(config: ServerConfig) -> StartResult:
    install = find_installation()
    check_dependencies(install, server_env(install))
    models, _ = choose_models(config)
    check_address(config.host)
    config = config.with_free_ports()
    check_ports(config)
    prepare_backends(config.state_dir, install)
    log_file = config.state_dir / LOG_FILE
    _rotate_log(log_file)
    (config.state_dir / LAUNCH_FILE).write_text(config.to_json(), encoding="utf-8")
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", SUPERVISOR_MODULE, "--state-dir", str(config.state_dir)],
            env=_supervisor_env(), cwd=config.state_dir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    log.info("started the supervisor (pid %d), loading %s", proc.pid, ", ".join(models))
    try:
        state = _wait_ready(config.state_dir, proc, config.timeout_s, models)
    except BaseException:
        _stop_supervisor(proc.pid, DEFAULT_STOP_TIMEOUT_S)
        procs.cleanup(config.state_dir)
        (config.state_dir / "server.json").unlink(missing_ok=True)
        raise
    return StartResult(state, False, probes.model_states(state))


def _answers_as_itself(state: ServerState) -> bool:
    return bool(state.server_id) and probes.server_id(state.http_url) == state.server_id


def _wait_ready(
    state_dir: Path, proc: subprocess.Popen[bytes] | None, timeout_s: float, models: list[str]
) -> ServerState:
    """Wait until the supervisor reports ready and the server answering is the one it started."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        state = ServerState.load(state_dir)
        gone = proc.poll() is not None if proc is not None else state is None or not supervisor_alive(state)
        if gone:
            raise failure_from_log(state_dir / LOG_FILE, models)
        if state is not None and state.phase == READY and _answers_as_itself(state) and probes.is_ready(state.http_url):
            return state
        if time.monotonic() >= deadline:
            raise StartTimeoutError(
                f"Triton was not ready after {timeout_s:.0f} s (raise --timeout on a slow host)",
                log_tail=log_tail(state_dir / LOG_FILE),
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def _stop_supervisor(pid: int, timeout_s: float) -> None:
    """SIGTERM the supervisor (it stops tritonserver and cleans up), SIGKILL it after the timeout."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            log.warning("the supervisor (pid %d) did not stop within %.0f s; killing it", pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)


def stop(state_dir: Path | None = None, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> StopResult:
    """Stop the supervised server of a state directory and remove whatever it (or a crash) left.

    Returns:
        The server that was stopped (None if none was running) and the leftovers removed.
    """
    state_dir = (state_dir or default_state_dir()).resolve()
    with locked(state_dir):
        state = ServerState.load(state_dir)
        running = state if state is not None and supervisor_alive(state) else None
        if running is not None:
            log.info("stopping the supervisor (pid %d) and tritonserver (pid %d)", running.supervisor_pid, running.pid)
            _stop_supervisor(running.supervisor_pid, timeout_s)
        done = procs.cleanup(state_dir, state.regions if state else ())
        if state is not None:
            state.forget()
        return StopResult(running, done)


@dataclass
class ServerStatus:
    """What ``status`` reports.

    Attributes:
        state: the supervised server's record (None: no supervisor runs).
        ready: the server answers as itself, is ready, and every model can serve.
        model_states: {model: state}; ``BROKEN`` for a model whose backend process died.
        problems: {model or "(server)": what is wrong}.
        leftovers: processes of a crashed server still running (when none runs properly).
    """

    state: ServerState | None
    ready: bool = False
    model_states: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    leftovers: int = 0

    @property
    def running(self) -> bool:
        """True if the supervisor runs (the server may be restarting)."""
        return self.state is not None


def status(state_dir: Path | None = None) -> ServerStatus:
    """Whether the server of a state directory runs and can really serve, checked now."""
    state_dir = (state_dir or default_state_dir()).resolve()
    state = running_state(state_dir)
    if state is None:
        return ServerStatus(None, leftovers=len(procs.leftovers(state_dir)[0]))
    found = health.check(state)
    states = dict(found.models)
    problems = {**found.broken, **found.affected}
    for model, why in (state.health if state.phase != READY else {}).items():
        if why.startswith(RECOVERING_PREFIX):
            states[model] = "RECOVERING"
        problems.setdefault(model, why.removeprefix(RECOVERING_PREFIX))
    if found.problem:
        problems["(server)"] = found.problem
    ready = found.ready and state.phase == READY and not problems
    return ServerStatus(state, ready, states, problems)
