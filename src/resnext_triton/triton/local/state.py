"""The state directory of a local Triton: where things live, ports, ``server.json``, the lock.

Everything a server needs lives in a *state directory* (default ``<project>/.triton/``): the
backend directory, the *serving view* Triton polls (``serving/``), ``launch.json`` (how it was
started), ``server.json`` (written by the supervisor: pids, ports, phase, restarts, model health)
and ``triton.log``. No secret lives there: Triton runs in poll mode, which has no admin API to guard.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from resnext_triton.triton.process import pid_alive

log = logging.getLogger(__name__)

ENV_STATE_DIR = "RESNEXT_TRITON_STATE_DIR"
ENV_MODEL_REPOSITORY = "RESNEXT_TRITON_MODEL_REPOSITORY"
ENV_BIND_ADDRESS = "TRITON_BIND_ADDRESS"

DEFAULT_HOST = "127.0.0.1"
STATE_FILE = "server.json"
LAUNCH_FILE = "launch.json"
LOG_FILE = "triton.log"
LOCK_FILE = ".lock"
VIEW_DIR = "serving"
SUPERVISOR_MODULE = "resnext_triton.triton.local.supervisor"

# The phases a supervisor reports in server.json.
STARTING, READY, RECOVERING, RESTARTING, FAILED, STOPPING = (
    "starting", "ready", "recovering", "restarting", "failed", "stopping",
)  # fmt: skip


def project_root() -> Path:
    """The checkout this package runs from (the folder holding pyproject.toml), else the working directory."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "resnext_triton").is_dir():
            return parent
    return Path.cwd()


def default_state_dir() -> Path:
    """``$RESNEXT_TRITON_STATE_DIR``, else ``<project>/.triton``."""
    env = os.environ.get(ENV_STATE_DIR)
    return Path(env) if env else project_root() / ".triton"


def default_repository() -> Path:
    """``$RESNEXT_TRITON_MODEL_REPOSITORY``, else ``<project>/model_repository``."""
    env = os.environ.get(ENV_MODEL_REPOSITORY)
    return Path(env) if env else project_root() / "model_repository"


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS reports free on ``host`` (for tests; another process may take it meanwhile)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_error(host: str, port: int) -> OSError | None:
    """Why nothing could listen on ``host:port`` now (None if something could)."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return exc
    return None


def port_in_use(host: str, port: int) -> bool:
    """True if a listener holds ``host:port`` (an address this host does not have is not 'in use')."""
    error = bind_error(host, port)
    return error is not None and error.errno == errno.EADDRINUSE


def client_host(host: str) -> str:
    """The address a client on this machine uses to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _url_host(host: str) -> str:
    host = client_host(host)
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class ServerState:
    """What ``server.json`` records about a supervised server (the supervisor writes it).

    ``pid`` is the current tritonserver (0 while it is being restarted), ``server_id`` the
    ``--id`` it was started with (Triton reports it as ``name`` in ``/v2``), ``health`` maps a
    model to what is wrong with it ("" when nothing is) and ``regions`` names the ``/dev/shm``
    regions of the Python-backend stubs, removed after a crash.
    """

    pid: int
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    repo: str
    log_file: str
    state_dir: str
    started_at: float
    models: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    version: str = ""
    supervisor_pid: int = 0
    server_id: str = ""
    phase: str = STARTING
    restarts: int = 0
    recoveries: int = 0
    last_exit: str = ""
    server_started_at: float = 0.0
    checked_at: float = 0.0
    health: dict[str, str] = field(default_factory=dict)
    regions: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the HTTP/REST endpoint."""
        return f"http://{_url_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (the form tritonclient.grpc takes)."""
        return f"{_url_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus metrics URL."""
        return f"http://{_url_host(self.host)}:{self.metrics_port}/metrics"

    def save(self) -> None:
        """Write ``server.json`` atomically."""
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def forget(self) -> None:
        """Remove ``server.json`` (the server is gone)."""
        (Path(self.state_dir) / STATE_FILE).unlink(missing_ok=True)

    @classmethod
    def load(cls, state_dir: Path) -> ServerState | None:
        """The recorded state, or None if there is none (or it is unreadable)."""
        path = state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = cls.__dataclass_fields__
            return cls(**{k: v for k, v in data.items() if k in known})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return None


def cmdline(pid: int) -> list[str]:
    """The command line of a process ([] if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0")[:-1]]


def supervisor_alive(state: ServerState) -> bool:
    """True if the supervisor recorded in ``state`` still runs (a reused pid does not count)."""
    pid = state.supervisor_pid
    if pid <= 0 or not pid_alive(pid):
        return False
    argv = cmdline(pid)
    return not argv or SUPERVISOR_MODULE in argv  # unreadable: trust the pid


def running_state(state_dir: Path) -> ServerState | None:
    """The state of the server this state directory supervises, if its supervisor still runs."""
    state = ServerState.load(state_dir)
    if state is None or not supervisor_alive(state):
        return None
    return state


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Serialize start/stop on one state directory across processes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def log_tail(path: Path | str, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, without Triton's table borders ('' if none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith("+--")]
    return "\n".join(kept[-lines:])
