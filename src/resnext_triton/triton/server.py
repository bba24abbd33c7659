"""Run a real Triton Inference Server locally, without Docker, on a CPU-only host.

The ``nvidia-pytriton`` wheel carries Triton Inference Server (``pytriton/tritonserver/bin/``) with
only its Python backend. This module gives it a backend directory holding that Python backend (plus
the stub for the running interpreter's Python version) and the CPU stand-ins for the ``onnxruntime``
and ``pytorch`` backends (``backends/*/model.py`` of this package), then starts it with
``--model-config-name=cpu`` in explicit model-control mode, loading every model of the repository
that can run on a CPU.

Everything the server needs lives in a *state directory* (default ``<project>/.triton/``): the
backend directory, ``server.json`` (pid, ports, models), ``triton.log`` and the token that guards
the model-repository, trace and logging APIs (``repository-api-token``; to load or unload models send
it as the HTTP header ``admin-token``, or as the gRPC metadata ``triton-grpc-protocol-admin-token``).
Servers bind to 127.0.0.1 unless told otherwise.

Library use (tests use it too)::

    with LocalTriton(ServerConfig(repo=Path("model_repository"), http_port=0)) as server:
        print(server.http_url, server.models)

Command line: ``python -m resnext_triton.triton.server {start,stop,status,logs} --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from resnext_triton.triton.process import pid_alive
from resnext_triton.triton.repository import servable_models

log = logging.getLogger(__name__)

ENV_STATE_DIR = "RESNEXT_TRITON_STATE_DIR"
ENV_MODEL_REPOSITORY = "RESNEXT_TRITON_MODEL_REPOSITORY"
ENV_BIND_ADDRESS = "TRITON_BIND_ADDRESS"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_TIMEOUT_S = 180.0
DEFAULT_STOP_TIMEOUT_S = 45.0
MODEL_CONFIG_NAME = "cpu"

STATE_FILE = "server.json"
LOG_FILE = "triton.log"
TOKEN_FILE = "repository-api-token"
LOCK_FILE = ".lock"
BACKENDS_DIR = "backends"
STANDIN_BACKENDS = ("onnxruntime", "pytorch")
ADMIN_HEADER = "admin-token"
# Triton expects a restricted gRPC protocol's key with this prefix in the call's metadata.
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
# Admin APIs that need the token: load/unload models, and change the server's tracing and logging.
RESTRICTED_APIS = ("model-repository", "trace", "logging")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3

_LOAD_FAILED = re.compile(r"failed to load '([^']+)'(?: version \d+)?: (.*)")
_CREATE_FAILED = re.compile(r"error: creating server: (.*)")


class ServerError(RuntimeError):
    """The local Triton could not be started, stopped or queried.

    Attributes:
        log_tail: the last lines of Triton's log, when there is one.
    """

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class DependencyError(ServerError):
    """The Triton binary or a shared library it needs is missing."""


class PortInUseError(ServerError):
    """A port the server should listen on is taken."""


class NoModelsError(ServerError):
    """The model repository holds no model this host can serve."""


class ModelLoadError(ServerError):
    """One or more models failed to load.

    Attributes:
        failures: {model name: Triton's reason}.
    """

    def __init__(self, message: str, *, failures: dict[str, str], log_tail: str = "") -> None:
        super().__init__(message, log_tail=log_tail)
        self.failures = failures


class ServerExitedError(ServerError):
    """The server process exited while starting."""


class StartTimeoutError(ServerError):
    """The server did not become ready within the timeout."""


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


# --------------------------------------------------------------------------------------------
# The Triton installation (nvidia-pytriton wheel)


@dataclass(frozen=True)
class TritonInstallation:
    """Where the pip-installed Triton keeps its pieces."""

    binary: Path
    lib_dir: Path
    python_backend: Path
    stub: Path

    @property
    def python_version(self) -> str:
        """The Python version of the stub (that of the running interpreter)."""
        return self.stub.parent.name


def find_installation() -> TritonInstallation:
    """Locate tritonserver, its libraries, the Python backend and the stub for this Python.

    Raises:
        DependencyError: if the nvidia-pytriton wheel or one of its pieces is missing.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            "tritonserver not found: the nvidia-pytriton wheel is not installed in this environment "
            "(run `python3 scripts/bootstrap.py`)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstallation(
        binary=root / "bin" / "tritonserver",
        lib_dir=package.parent / "nvidia_pytriton.libs",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for what, path in (
        ("tritonserver binary", install.binary),
        ("Triton's libraries", install.lib_dir),
        ("Triton's Python backend", install.python_backend / "libtriton_python.so"),
        (f"the Python backend stub for Python {version}", install.stub),
    ):
        if not path.exists():
            raise DependencyError(f"{what} not found at {path} (reinstall nvidia-pytriton: scripts/bootstrap.py)")
    return install


def server_env(install: TritonInstallation, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for tritonserver: Triton's libraries first, this virtualenv's bin/ first on PATH.

    The Python stub takes its packages from the ``python3`` first on PATH; without the virtualenv
    there, models fail with ModuleNotFoundError.
    """
    env = dict(os.environ if base is None else base)
    lib_path = [str(install.lib_dir)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    env["LD_LIBRARY_PATH"] = ":".join(lib_path)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = ":".join([bin_dir] + [p for p in env.get("PATH", "").split(":") if p and p != bin_dir])
    return env


def missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """Shared libraries ``binary`` links that the dynamic loader cannot find (empty if ldd is absent)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        log.debug("ldd not found; not checking the shared libraries of %s", binary)
        return []
    proc = subprocess.run([ldd, str(binary)], env=env, capture_output=True, text=True, check=False)
    return sorted({line.split()[0] for line in proc.stdout.splitlines() if "not found" in line})


def check_dependencies(install: TritonInstallation, env: dict[str, str]) -> None:
    """Check that tritonserver and the Python stub find every shared library they link.

    Raises:
        DependencyError: naming the missing libraries and how to install them.
    """
    problems = []
    for binary in (install.binary, install.stub):
        missing = missing_libraries(binary, env)
        if missing:
            problems.append(f"{binary.name} needs {', '.join(missing)}")
    if problems:
        hint = ""
        if any("libpython" in p for p in problems):
            hint = (
                f"; the Python backend stub links the shared libpython{install.python_version}: install it "
                f"(Debian/Ubuntu: apt-get install libpython{install.python_version})"
            )
        raise DependencyError("missing shared libraries: " + "; ".join(problems) + hint)


def _copy_if_changed(source: Path, target: Path, *, mode: int | None = None) -> None:
    if target.is_file():
        src, dst = source.stat(), target.stat()
        if src.st_size == dst.st_size and int(src.st_mtime) == int(dst.st_mtime):
            return
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copy2(source, tmp)
    if mode is not None:
        tmp.chmod(mode)
    os.replace(tmp, target)


def prepare_backends(state_dir: Path, install: TritonInstallation) -> Path:
    """Build ``<state_dir>/backends``: the Python backend with its stub, and the CPU stand-ins.

    Returns:
        The backend directory to pass as ``--backend-directory``.
    """
    backends = state_dir / BACKENDS_DIR
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _copy_if_changed(install.python_backend / name, python_dir / name)
    _copy_if_changed(install.stub, python_dir / install.stub.name, mode=0o755)
    package_backends = resources.files("resnext_triton.triton").joinpath("backends")
    for name in STANDIN_BACKENDS:
        target = backends / name / "model.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        with resources.as_file(package_backends.joinpath(name, "model.py")) as source:
            _copy_if_changed(Path(source), target)
    return backends


# --------------------------------------------------------------------------------------------
# Ports, state, tokens


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
def _locked(state_dir: Path) -> Iterator[None]:
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


# --------------------------------------------------------------------------------------------
# HTTP probes (no client library needed)


def _get(url: str, *, timeout_s: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _post(url: str, *, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def is_ready(http_url: str, *, timeout_s: float = 2.0) -> bool:
    """True if ``/v2/health/ready`` answers 200 (with strict readiness: every loaded model is ready)."""
    try:
        return _get(f"{http_url}/v2/health/ready", timeout_s=timeout_s)[0] == 200
    except (OSError, urllib.error.URLError):
        return False


def model_states(state: ServerState, token: str | None = None) -> dict[str, str]:
    """{model: state} from the repository index (needs the token), else READY/UNAVAILABLE per loaded model."""
    if token:
        try:
            code, body = _post(f"{state.http_url}/v2/repository/index", headers={ADMIN_HEADER: token})
            if code == 200:
                index = json.loads(body)
                return {m["name"]: m.get("state") or "UNAVAILABLE" for m in index if "name" in m}
        except (OSError, urllib.error.URLError, ValueError):
            pass
    states = {}
    for name in state.models:
        try:
            ok = _get(f"{state.http_url}/v2/models/{name}/ready")[0] == 200
        except (OSError, urllib.error.URLError):
            ok = False
        states[name] = "READY" if ok else "UNAVAILABLE"
    return states


def server_version(http_url: str) -> str:
    """Triton's version from server metadata ('' if it does not answer)."""
    try:
        code, body = _get(f"{http_url}/v2")
        return str(json.loads(body).get("version", "")) if code == 200 else ""
    except (OSError, urllib.error.URLError, ValueError):
        return ""


# --------------------------------------------------------------------------------------------
# Start / stop


@dataclass(frozen=True)
class ServerConfig:
    """How to start a local Triton.

    A port of 0 picks a free one (tests). ``models`` restricts what is loaded (default: every
    model of the repository this CPU host can serve).
    """

    repo: Path = field(default_factory=default_repository)
    state_dir: Path = field(default_factory=default_state_dir)
    host: str = DEFAULT_HOST
    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    timeout_s: float = DEFAULT_TIMEOUT_S
    models: tuple[str, ...] | None = None
    log_verbose: int = 0
    exit_timeout_s: int = 30
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ports = {"HTTP": self.http_port, "gRPC": self.grpc_port, "metrics": self.metrics_port}
        for name, port in ports.items():
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} port must be in 0..65535, got {port}")
        chosen = [p for p in ports.values() if p]
        if len(chosen) != len(set(chosen)):
            raise ValueError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout_s}")

    def with_free_ports(self) -> ServerConfig:
        """A copy where each port given as 0 is replaced by a free one."""
        taken: set[int] = {p for p in (self.http_port, self.grpc_port, self.metrics_port) if p}

        def pick(port: int) -> int:
            while not port:
                candidate = free_port(self.host)
                if candidate not in taken:
                    port = candidate
                    taken.add(port)
            return port

        return replace(
            self, http_port=pick(self.http_port), grpc_port=pick(self.grpc_port), metrics_port=pick(self.metrics_port)
        )


def check_ports(config: ServerConfig) -> None:
    """Fail before starting if a port is taken.

    Raises:
        PortInUseError: naming each busy port and the option that changes it.
    """
    busy = [
        f"{name} port {port} ({option})"
        for name, port, option in (
            ("HTTP", config.http_port, "--http-port"),
            ("gRPC", config.grpc_port, "--grpc-port"),
            ("metrics", config.metrics_port, "--metrics-port"),
        )
        if port_in_use(config.host, port)
    ]
    if busy:
        raise PortInUseError(
            f"port in use on {config.host}: {', '.join(busy)}; stop the process holding it "
            "or choose another port with the option shown"
        )


def build_command(
    config: ServerConfig, install: TritonInstallation, backends: Path, models: list[str], token: str
) -> list[str]:
    """The tritonserver command line (every flag checked against ``tritonserver --help`` of 2.51)."""
    restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={token}"
    cmd = [
        str(install.binary),
        f"--model-repository={config.repo.resolve()}",
        f"--model-config-name={MODEL_CONFIG_NAME}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in models),
        f"--backend-directory={backends}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={config.exit_timeout_s}",
        f"--http-address={config.host}",
        f"--http-port={config.http_port}",
        f"--grpc-address={config.host}",
        f"--grpc-port={config.grpc_port}",
        f"--metrics-address={config.host}",
        f"--metrics-port={config.metrics_port}",
        "--allow-gpu-metrics=false",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
        f"--log-verbose={config.log_verbose}",
        *config.extra_args,
    ]
    return cmd


def _choose_models(config: ServerConfig) -> tuple[list[str], dict[str, str]]:
    if not config.repo.is_dir():
        raise NoModelsError(f"model repository {config.repo} does not exist (export first: export/export.py)")
    load, skipped = servable_models(config.repo, cpu=True)
    if config.models is not None:
        unknown = [m for m in config.models if m not in load]
        if unknown:
            why = [f"{m}: {skipped.get(m, 'not in the repository')}" for m in unknown]
            raise NoModelsError(f"cannot serve {'; '.join(why)}")
        skipped.update({m: "not requested" for m in load if m not in config.models})
        load = [m for m in load if m in config.models]
    for name, reason in skipped.items():
        log.info("not loading %s: %s", name, reason)
    if not load:
        detail = "; ".join(f"{m}: {r}" for m, r in skipped.items()) or "it holds no model directory"
        raise NoModelsError(
            f"no model in {config.repo} can be served on this CPU host ({detail}); "
            "export one with: python export/export.py --formats torchscript,onnx"
        )
    return load, skipped


def _rotate_log(path: Path) -> None:
    if path.exists() and path.stat().st_size:
        os.replace(path, path.with_name(path.name + ".1"))


def _failure_from_log(log_file: Path, models: list[str]) -> ServerError:
    """The error that explains why the server exited, from its log."""
    tail = log_tail(log_file)
    text = log_tail(log_file, lines=400)
    failures: dict[str, str] = {}
    for line in text.splitlines():
        match = _LOAD_FAILED.search(line)
        if match and match.group(1) in models:
            failures[match.group(1)] = match.group(2).split("\\n")[0].rstrip('"').strip()
    if failures:
        detail = "; ".join(f"{name}: {why}" for name, why in failures.items())
        return ModelLoadError(f"model failed to load: {detail}", failures=failures, log_tail=tail)
    created = [m.group(1) for line in text.splitlines() if (m := _CREATE_FAILED.search(line))]
    reason = created[-1] if created else "see the log"
    if "Address already in use" in text or "address already in use" in text:
        return PortInUseError(f"tritonserver could not bind its ports: {reason}", log_tail=tail)
    return ServerExitedError(f"tritonserver exited while starting: {reason}", log_tail=tail)


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
    with _locked(state_dir):
        existing = running_state(state_dir)
        if existing is not None:
            log.info("Triton already runs for %s (pid %d)", state_dir, existing.pid)
            _wait_ready(existing, None, config.timeout_s)
            return StartResult(existing, True, model_states(existing, repository_token(state_dir)))
        return _start_new(config)


def _start_new(config: ServerConfig) -> StartResult:
    install = find_installation()
    env = server_env(install)
    check_dependencies(install, env)
    models, skipped = _choose_models(config)
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
            (Path(state.state_dir) / STATE_FILE).unlink(missing_ok=True)
            raise _failure_from_log(Path(state.log_file), state.models)
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
    (Path(state.state_dir) / STATE_FILE).unlink(missing_ok=True)


def stop(state_dir: Path | None = None, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> ServerState | None:
    """Stop the server a state directory started.

    Returns:
        The state of the server that was stopped, or None if none was running.
    """
    state_dir = (state_dir or default_state_dir()).resolve()
    with _locked(state_dir):
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


class LocalTriton:
    """A local Triton for the lifetime of a ``with`` block.

    It stops the server on exit only if it started it (a server already running for the same
    state directory is reused and left running).
    """

    def __init__(self, config: ServerConfig | None = None, **overrides: Any) -> None:
        base = config or ServerConfig()
        self.config = replace(base, **overrides) if overrides else base
        self.result: StartResult | None = None

    def start(self) -> LocalTriton:
        """Start (or reuse) the server and wait until it is ready."""
        self.result = start(self.config)
        return self

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if self.result is not None and not self.result.already_running:
            stop(Path(self.result.state.state_dir))
        self.result = None

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def state(self) -> ServerState:
        """The running server's state.

        Raises:
            ServerError: if the server is not started.
        """
        if self.result is None:
            raise ServerError("the server is not started")
        return self.result.state

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.state.http_url

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:PORT``."""
        return self.state.grpc_url

    @property
    def metrics_url(self) -> str:
        """``http://127.0.0.1:PORT/metrics``."""
        return self.state.metrics_url

    @property
    def models(self) -> list[str]:
        """The models loaded at start."""
        return list(self.state.models)

    @property
    def admin_headers(self) -> dict[str, str]:
        """The HTTP header that unlocks the model-repository, trace and logging APIs."""
        return {ADMIN_HEADER: repository_token(Path(self.state.state_dir))}

    @property
    def grpc_admin_headers(self) -> dict[str, str]:
        """The gRPC metadata that unlocks the model-repository, trace and logging protocols."""
        return {GRPC_ADMIN_HEADER: repository_token(Path(self.state.state_dir))}

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        return log_tail(self.state.log_file, lines)


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m resnext_triton.triton.server`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m resnext_triton.triton.server",
        description="Run the pip-installed Triton Inference Server locally on a CPU host, with CPU stand-ins "
        "for the onnxruntime and pytorch backends.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="pid, ports, log, backends and the admin token live here "
        f"(default: ${ENV_STATE_DIR} or <project>/.triton)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start,stop,status,logs}")

    p_start = sub.add_parser("start", help="start Triton (no-op if it already runs) and wait until it is ready")
    p_start.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help=f"model repository (default: ${ENV_MODEL_REPOSITORY} or <project>/model_repository)",
    )
    p_start.add_argument(
        "--host",
        default=None,
        help=f"address to bind HTTP, gRPC and metrics to (default: ${ENV_BIND_ADDRESS} or {DEFAULT_HOST})",
    )
    p_start.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="HTTP port (default %(default)s)")
    p_start.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port (default %(default)s)")
    p_start.add_argument(
        "--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="metrics port (default %(default)s)"
    )
    p_start.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for readiness (default %(default)s)"
    )
    p_start.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="load only this model (repeatable; default: every model this CPU host can serve)",
    )
    p_start.add_argument("--log-verbose", type=int, default=0, help="Triton's --log-verbose level (default 0)")

    p_stop = sub.add_parser("stop", help="stop the server this state directory started")
    p_stop.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT_S,
        help="seconds to wait before killing it (default %(default)s)",
    )
    p_status = sub.add_parser("status", help="is it running and ready, which models are loaded (exit 3 if not running)")
    p_status.add_argument("--json", action="store_true", help="machine-readable output")
    p_logs = sub.add_parser("logs", help="print the end of Triton's log")
    p_logs.add_argument("-n", "--lines", type=int, default=50, help="lines to print (default %(default)s)")
    p_logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    return parser


def _print_endpoints(state: ServerState, states: dict[str, str]) -> None:
    ready = [m for m, s in states.items() if s == "READY"]
    print(f"  HTTP     {state.http_url}")
    print(f"  gRPC     {state.grpc_url}")
    print(f"  metrics  {state.metrics_url}")
    print(f"  READY    {', '.join(ready) if ready else '(none)'}")
    for name, model_state in states.items():
        if model_state != "READY":
            reason = state.skipped.get(name, "")
            print(f"  {model_state:<8} {name}" + (f" ({reason})" if reason else ""))
    print(f"  repo     {state.repo} (configs/{MODEL_CONFIG_NAME}.pbtxt)")
    print(f"  log      {state.log_file}")
    token_file = Path(state.state_dir) / TOKEN_FILE
    print(
        f"  admin    load/unload: HTTP header '{ADMIN_HEADER}' (gRPC '{GRPC_ADMIN_HEADER}') = contents of {token_file}"
    )


def _cmd_start(args: argparse.Namespace) -> int:
    config = ServerConfig(
        repo=args.model_repository or default_repository(),
        state_dir=args.state_dir or default_state_dir(),
        host=args.host or os.environ.get(ENV_BIND_ADDRESS) or DEFAULT_HOST,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        timeout_s=args.timeout,
        models=tuple(args.models) if args.models else None,
        log_verbose=args.log_verbose,
    )
    result = start(config)
    state = result.state
    if result.already_running:
        print(f"Triton is already running for {state.state_dir} (pid {state.pid}); not starting another")
        asked = (config.http_port, config.grpc_port, config.metrics_port)
        if asked != (state.http_port, state.grpc_port, state.metrics_port):
            print("  (it keeps its own ports; run `stop` first to change them)")
    else:
        version = f" {state.version}" if state.version else ""
        print(f"Triton Inference Server{version} is ready (pid {state.pid})")
    for name, reason in state.skipped.items():
        if name not in result.model_states:
            print(f"  skipped  {name}: {reason}")
    _print_endpoints(state, result.model_states)
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    state = stop(args.state_dir, timeout_s=args.timeout)
    if state is None:
        print("Triton is not running")
    else:
        print(f"stopped Triton (pid {state.pid})")
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    info = status(args.state_dir)
    if args.json:
        print(
            json.dumps(
                {
                    "running": info.running,
                    "ready": info.ready,
                    "models": info.model_states,
                    **(
                        {
                            "pid": info.state.pid,
                            "http_url": info.state.http_url,
                            "grpc_url": info.state.grpc_url,
                            "metrics_url": info.state.metrics_url,
                            "log_file": info.state.log_file,
                            "repo": info.state.repo,
                        }
                        if info.state
                        else {}
                    ),
                },
                indent=2,
            )
        )
        return EXIT_OK if info.running else EXIT_NOT_RUNNING
    if info.state is None:
        print("Triton is not running")
        return EXIT_NOT_RUNNING
    uptime = time.time() - info.state.started_at
    print(f"Triton is running (pid {info.state.pid}, up {uptime:.0f} s), {'ready' if info.ready else 'NOT ready'}")
    _print_endpoints(info.state, info.model_states)
    return EXIT_OK if info.ready else EXIT_ERROR


def _cmd_logs(args: argparse.Namespace) -> int:
    path = (args.state_dir or default_state_dir()).resolve() / LOG_FILE
    if not path.is_file():
        print(f"no log at {path} (Triton was never started with this state directory)", file=sys.stderr)
        return EXIT_ERROR
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines()[-args.lines :] if args.lines > 0 else []
        print("\n".join(lines))
        if not args.follow:
            return EXIT_OK
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                chunk = f.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 3 status: not running)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("resnext_triton").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    commands = {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status, "logs": _cmd_logs}
    try:
        return commands[args.command](args)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.log_tail:
            print(f"--- last lines of Triton's log ---\n{exc.log_tail}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy, so loggers carry the package's name.
    from resnext_triton.triton.server import main as _main

    sys.exit(_main())
