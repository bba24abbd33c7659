"""The GPU harness's own small Triton launcher: one tritonserver for one run, on free loopback ports.

It runs the tritonserver of :class:`~resnext_triton.bench.gpu_tools.HarnessTools` (the carry's, or
this environment's) with the backend directory that :func:`resnext_triton.triton.local.install.prepare_backends`
builds (the Python backend, its stub, the stand-ins). On a GPU the models load with their
``config.pbtxt`` (KIND_GPU); in CPU mode with ``configs/cpu.pbtxt`` (``--model-config-name=cpu``),
as the local launcher does. The server runs in its own process group, so that stopping it also
stops the Python backend stubs it started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from resnext_triton.bench.gpu_tools import HarnessTools

HOST = "127.0.0.1"
SHM_BYTES = 64 * 2**20
"""Python backend shared memory per stub on a GPU (a batch of 64 FP16 images is 19 MB)."""


class ServerStartError(RuntimeError):
    """tritonserver exited or did not become ready; carries the tail of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True)
class Server:
    """A running tritonserver's addresses (``host:port``) and log."""

    http: str
    grpc: str
    log_file: Path
    command: tuple[str, ...]


def free_port() -> int:
    """A TCP port free on the loopback address now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_command(tools: HarnessTools, repo: Path, models: Sequence[str], backends: Path, ports: Sequence[int], *,
                   gpu: bool, token: str) -> list[str]:
    """The tritonserver command line (flags as in ``tritonserver --help`` of 2.51)."""
    http, grpc, metrics = ports
    restricted = f"model-repository,trace,logging:admin-token={token}"
    cmd = [str(tools.install.binary), f"--model-repository={repo.resolve()}", "--model-control-mode=explicit",
           *(f"--load-model={m}" for m in models), f"--backend-directory={backends}",
           "--strict-readiness=true", "--exit-on-error=true", "--exit-timeout-secs=30",
           f"--http-address={HOST}", f"--http-port={http}", f"--grpc-address={HOST}", f"--grpc-port={grpc}",
           f"--metrics-address={HOST}", f"--metrics-port={metrics}", "--allow-gpu-metrics=false",
           f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}", "--log-verbose=0"]
    if gpu:
        cmd += [f"--backend-config=python,shm-default-byte-size={SHM_BYTES}",
                f"--backend-config=python,shm-growth-byte-size={SHM_BYTES}"]
    else:
        cmd.insert(2, "--model-config-name=cpu")
    return cmd


def _ready(http: str, models: Sequence[str]) -> bool:
    try:
        for path in ("/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)):
            with urllib.request.urlopen(f"http://{http}{path}", timeout=2.0) as response:
                if response.status != 200:
                    return False
        return True
    except (OSError, urllib.error.URLError):
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' if it cannot be read)."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen, timeout_s: float = 40.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``timeout_s`` (the group holds the stubs)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stubs left behind by the server
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def serve(tools: HarnessTools, repo: Path, models: Sequence[str], work: Path, *, gpu: bool,
          timeout_s: float = 300.0) -> Iterator[Server]:
    """Run tritonserver for the ``with`` block, serving ``models`` of ``repo``; always stopped afterwards.

    Raises:
        ServerStartError: if it exits or is not ready (every model loaded) within ``timeout_s``.
    """
    from resnext_triton.triton.local.install import prepare_backends  # needs tritonclient (carried)

    backends = prepare_backends(work / "triton_state", tools.install)
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port()
        if port not in ports:
            ports.append(port)
    cmd = server_command(tools, repo, models, backends, ports, gpu=gpu, token=secrets.token_hex(16))
    log_file = work / "triton.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=tools.server_env, start_new_session=True)
    try:
        server = Server(http=f"{HOST}:{ports[0]}", grpc=f"{HOST}:{ports[1]}", log_file=log_file, command=tuple(cmd))
        deadline = time.monotonic() + timeout_s
        while not _ready(server.http, models):
            if proc.poll() is not None:
                raise ServerStartError(f"tritonserver exited with status {proc.returncode}", log_tail(log_file))
            if time.monotonic() > deadline:
                raise ServerStartError(f"tritonserver was not ready within {timeout_s:g} s", log_tail(log_file))
            time.sleep(0.5)
        yield server
    finally:
        _stop(proc)
