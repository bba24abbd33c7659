"""The state directory of a local Triton: where things live, ports, ``server.json``, the admin token, the lock.

Everything the server needs lives in a *state directory* (default ``<project>/.triton/``): the
backend directory, ``server.json`` (pid, ports, models), ``triton.log`` and the token that guards
the model-repository, trace and logging APIs (``repository-api-token``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
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
LOG_FILE = "triton.log"
TOKEN_FILE = "repository-api-token"
LOCK_FILE = ".lock"
ADMIN_HEADER = "admin-token"
# Triton expects a restricted gRPC protocol's key with this prefix in the call's metadata.
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"


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


def port_in_use(host: str, port: int) -> bool:
    """True if nothing can listen on ``host:port`` now (a listener holds it, or the address is invalid)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


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
    """What ``server.json`` in the state directory records about a running server."""

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
        tmp = path.with_name(f".{STATE_FILE}.tmp")
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
            return cls(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return None


def repository_token(state_dir: Path) -> str:
    """The model-repository API token of a state directory (created on first use, mode 0600)."""
    path = state_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if not token:
        state_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
    return token


def _is_tritonserver(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(pid)
    return bool(cmdline) and cmdline[0].endswith(b"tritonserver")


def running_state(state_dir: Path) -> ServerState | None:
    """The state of the server this state directory started, if it still runs (a stale record is removed)."""
    state = ServerState.load(state_dir)
    if state is None:
        return None
    if pid_alive(state.pid) and _is_tritonserver(state.pid):
        return state
    log.debug("removing stale %s (pid %d is gone)", state_dir / STATE_FILE, state.pid)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return None


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
