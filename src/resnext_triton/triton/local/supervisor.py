"""The supervisor: a small detached process that owns tritonserver, keeps it honest and restarts it.

``start`` runs ``python -m resnext_triton.triton.local.supervisor --state-dir D`` in its own
session. The supervisor reads ``launch.json``, builds the serving view and starts tritonserver in
its own process group, with umask 077 and SIGTERM as its parent-death signal (so a killed
supervisor takes its server down). Then, until SIGTERM:

- every ``health_interval_s`` it syncs the view with the repository (new versions go live, new
  servable models are added), runs :func:`health.check`, reloads a model whose backend stub died
  (a change of the model's directory in the view makes poll mode reload it) and confirms the
  recovery with a real request, restarting the whole server if that fails within ``timeout_s``;
  it makes the stubs' ``/dev/shm`` regions private and writes ``server.json``;
- when tritonserver exits it logs how (status or signal), removes the stubs and regions left
  behind, and starts it again after a backoff (1 s, doubling up to ``max_backoff_s``, back to 1 s
  after a minute of health), counting restarts. A server that exits before it was ever ready is
  not restarted: the supervisor exits and ``start`` reports the cause from the log.

Its log lines go to ``triton.log`` beside Triton's own, prefixed ``supervisor``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from resnext_triton.triton.local import health, probes, procs
from resnext_triton.triton.local.errors import ServerError
from resnext_triton.triton.local.install import TritonInstallation, find_installation, prepare_backends, server_env
from resnext_triton.triton.local.launch import ServerConfig, build_command, choose_models
from resnext_triton.triton.local.state import (
    FAILED,
    LAUNCH_FILE,
    LOG_FILE,
    READY,
    RECOVERING,
    RESTARTING,
    STARTING,
    STOPPING,
    VIEW_DIR,
    ServerState,
)  # fmt: skip
from resnext_triton.triton.local.view import ServingView
from resnext_triton.triton.process import pid_alive

log = logging.getLogger("resnext_triton.supervisor")

TICK_S = 0.25
STABLE_AFTER_S = 60.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(code: int) -> str:
    """'was killed by signal 6 (SIGABRT)' or 'exited with status 1'."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class _Recovery:
    since: float
    old_stubs: set[int]
    why: str


class Supervisor:
    """Runs one tritonserver for a state directory until told to stop."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir
        self.view = ServingView(self.state_dir / VIEW_DIR, config.repo)
        self.stopping = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_reason = ""
        self.recovering: dict[str, _Recovery] = {}
        self.failures = 0
        self.ready_since: float | None = None
        self.ever_ready = False
        self.configs = health.ConfigCache("")
        self.state = ServerState(
            pid=0, host=config.host, http_port=config.http_port, grpc_port=config.grpc_port,
            metrics_port=config.metrics_port, repo=str(config.repo), log_file=str(self.state_dir / LOG_FILE),
            state_dir=str(self.state_dir), started_at=time.time(), supervisor_pid=os.getpid(),
        )  # fmt: skip

    def _update(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)  # type: ignore[arg-type]
        self.state.save()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit status (1 if the first start failed)."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            install = find_installation()
            env = server_env(install)
            backends = prepare_backends(self.state_dir, install)
            models, skipped = choose_models(self.config)
        except ServerError as exc:
            log.error("cannot start: %s", exc)
            return 1
        self.view.rebuild(models)
        self._update(models=models, skipped=skipped)
        try:
            while not self.stopping:
                self._spawn(install, env, backends)
                how = self._serve()
                if self.stopping:
                    break
                if not self.ever_ready:
                    log.error("tritonserver (pid %d) %s before it was ready; not restarting it", self.state.pid, how)
                    self._update(phase=FAILED, last_exit=how)
                    return 1
                self._restart_after(how)
        finally:
            self._shutdown()
        return 0

    def _spawn(self, install: TritonInstallation, env: dict[str, str], backends: Path) -> None:
        server_id = f"resnext-triton-{secrets.token_hex(6)}"
        cmd = build_command(self.config, install, backends, self.view.root, server_id)
        with open(self.state_dir / LOG_FILE, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=self.state_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                process_group=0, umask=0o077, preexec_fn=_die_with_parent,
            )  # fmt: skip
        self.configs = health.ConfigCache(self.state.http_url)
        self.recovering.clear()
        self.restart_reason = ""
        phase = STARTING if not self.ever_ready else RESTARTING
        self._update(pid=self.proc.pid, server_id=server_id, phase=phase, server_started_at=time.time(), regions=[])
        models = ", ".join(self.state.models)
        log.info("started tritonserver (pid %d, id %s) serving %s", self.proc.pid, server_id, models)

    def _serve(self) -> str:
        """Watch the server until it exits (returns how) or a stop is asked (returns '')."""
        assert self.proc is not None
        next_check = 0.0
        while not self.stopping:
            code = self.proc.poll()
            if code is not None:
                how = describe_exit(code)
                return f"{how} ({self.restart_reason})" if self.restart_reason else how
            now = time.monotonic()
            if now >= next_check:
                next_check = now + self.config.health_interval_s
                self._sync_models()
                if self.state.phase in (STARTING, RESTARTING):
                    self._check_started()
                else:
                    self._check_health()
                self._update(checked_at=time.time())
            time.sleep(TICK_S)
        return ""

    def _check_started(self) -> None:
        url = self.state.http_url
        if probes.server_id(url) == self.state.server_id and probes.is_ready(url):
            self.ever_ready = True
            self.ready_since = time.monotonic()
            self._update(phase=READY, version=probes.server_version(url), health={})
            log.info("tritonserver (pid %d) is ready", self.state.pid)
            self._check_health()

    def _check_health(self) -> None:
        found = health.check(self.state, self.configs)
        now = time.monotonic()
        for model, why in found.broken.items():
            if model not in self.recovering:
                old = {s.pid for s in found.stubs if s.model == model}
                self.recovering[model] = _Recovery(now, old, why)
                log.warning("%s: %s; reloading it", model, why)
                self.view.request_reload(model)
                self._update(recoveries=self.state.recoveries + 1)
        for model, recovery in list(self.recovering.items()):
            if model not in found.broken and self._recovered(model, recovery):
                log.info("%s recovered in %.1f s", model, now - recovery.since)
                del self.recovering[model]
            elif now - recovery.since > self.config.timeout_s and not self.restart_reason:
                self.restart_reason = f"{model} did not recover within {self.config.timeout_s:.0f} s"
                log.error("%s; restarting tritonserver", self.restart_reason)
                self._kill_server()
        regions = sorted({*self.state.regions, *(s.region for s in found.stubs)})
        procs.privatize_regions(s.region for s in found.stubs)
        problems = {m: f"recovering: {r.why}" for m, r in self.recovering.items()}
        problems.update({m: f"recovering: {why}" for m, why in found.affected.items()})
        problems.update({m: s for m, s in found.models.items() if s != "READY" and m not in problems})
        if found.problem:
            problems["(server)"] = found.problem
        self._update(phase=RECOVERING if self.recovering else READY, health=problems, regions=regions)

    def _recovered(self, model: str, recovery: _Recovery) -> bool:
        if any(pid_alive(pid) for pid in recovery.old_stubs):
            return False  # the old instances are still loaded: the new ones have not taken over
        config = probes.model_config(self.state.http_url, model)
        return config is not None and probes.infer_probe(self.state.http_url, config)

    def _sync_models(self) -> None:
        try:
            models, skipped = choose_models(self.config, quiet=True)
        except ServerError:
            models, skipped = self.state.models, self.state.skipped
        self.view.sync(models)
        if models != self.state.models:
            log.info("serving view now holds %s", ", ".join(models))
            self._update(models=models, skipped=skipped)

    def _kill_server(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def _restart_after(self, how: str) -> None:
        pid = self.state.pid
        if self.ready_since is not None and time.monotonic() - self.ready_since >= STABLE_AFTER_S:
            self.failures = 0
        self.failures += 1
        self.ready_since = None
        delay = min(self.config.max_backoff_s, 2.0 ** (self.failures - 1))
        restarts = self.state.restarts + 1
        log.error("tritonserver (pid %d) %s; restart %d in %.0f s", pid, how, restarts, delay)
        self._update(pid=0, phase=RESTARTING, restarts=restarts, last_exit=f"{how} at {time.strftime('%H:%M:%S')}")
        done = procs.cleanup(self.state_dir, self.state.regions)
        if done:
            log.info("removed what tritonserver %d left: %s", pid, done.describe())
        self._update(regions=[])
        deadline = time.monotonic() + delay
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(TICK_S)

    def _shutdown(self) -> None:
        self._update(phase=STOPPING)
        proc = self.proc
        if proc is not None and proc.poll() is None:
            log.info("stopping tritonserver (pid %d)", proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=self.config.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver (pid %d) did not stop; killing it", proc.pid)
                self._kill_server()
                proc.wait(timeout=10)
        done = procs.cleanup(self.state_dir, self.state.regions)
        if done:
            log.info("removed what tritonserver left: %s", done.describe())
        self.state.forget()
        log.info("supervisor stopped")


def main(argv: list[str] | None = None) -> int:
    """``python -m resnext_triton.triton.local.supervisor --state-dir D`` (started by ``start``)."""
    parser = argparse.ArgumentParser(prog="python -m resnext_triton.triton.local.supervisor")
    parser.add_argument("--state-dir", type=Path, required=True, help="the state directory holding launch.json")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s supervisor[%(process)d] %(levelname)s: %(message)s"
    )
    state_dir = args.state_dir.resolve()
    config = ServerConfig.from_json((state_dir / LAUNCH_FILE).read_text(encoding="utf-8"))
    return Supervisor(replace(config, state_dir=state_dir)).run()


if __name__ == "__main__":
    sys.exit(main())
