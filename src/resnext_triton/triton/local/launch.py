"""What to launch: the server's configuration, its ports, the models it loads, the tritonserver command line."""

from __future__ import annotations

import errno
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from resnext_triton.triton.ensemble import PREPROCESS_SUFFIX, classifier_of
from resnext_triton.triton.local.errors import AddressError, NoModelsError, PortInUseError
from resnext_triton.triton.local.install import TritonInstallation
from resnext_triton.triton.local.state import DEFAULT_HOST, bind_error, default_repository, default_state_dir, free_port
from resnext_triton.triton.repository import servable_models

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_TIMEOUT_S = 180.0
MODEL_CONFIG_NAME = "cpu"
DEFAULT_POLL_SECS = 2


@dataclass(frozen=True)
class ServerConfig:
    """How to start a local Triton.

    A port of 0 picks a free one (tests). ``models`` restricts what is loaded (default: every
    model of the repository this CPU host can serve, re-read while it runs). ``poll_secs`` is how
    often Triton polls the serving view, ``health_interval_s`` how often the supervisor checks it.
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
    poll_secs: int = DEFAULT_POLL_SECS
    health_interval_s: float = 2.0
    max_backoff_s: float = 30.0

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
        if self.poll_secs < 1 or self.health_interval_s <= 0 or self.max_backoff_s <= 0:
            raise ValueError("poll_secs must be >= 1 and health_interval_s, max_backoff_s positive")

    def to_json(self) -> str:
        """The configuration as JSON (``launch.json``: what the supervisor starts)."""
        data = asdict(self)
        data["repo"], data["state_dir"] = str(self.repo), str(self.state_dir)
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        """Read :meth:`to_json`'s output back.

        Raises:
            ValueError: if it is not such a configuration.
        """
        data: dict[str, Any] = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a server configuration")
        known = cls.__dataclass_fields__
        data = {k: v for k, v in data.items() if k in known}
        data["repo"], data["state_dir"] = Path(data["repo"]), Path(data["state_dir"])
        data["models"] = tuple(data["models"]) if data.get("models") is not None else None
        data["extra_args"] = tuple(data.get("extra_args", ()))
        return cls(**data)

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


def _address_error(host: str, error: OSError) -> AddressError:
    return AddressError(
        f"cannot listen on {host} ({error.strerror or error}): bind to an address of this host "
        "(127.0.0.1, 0.0.0.0 for every interface, or one `ip addr` lists) with --bind/--host"
    )


def check_address(host: str) -> None:
    """Fail if nothing can listen on ``host`` (not an address of this host).

    Raises:
        AddressError: naming the address and what to bind to instead.
    """
    error = bind_error(host, 0)
    if error is not None:
        raise _address_error(host, error)


def check_ports(config: ServerConfig) -> None:
    """Fail before starting if a port is taken or the address cannot be bound.

    Raises:
        AddressError: the address is not one of this host's (or not an address at all).
        PortInUseError: naming each busy port and the option that changes it.
    """
    check_address(config.host)
    busy = []
    for name, port, option in (
        ("HTTP", config.http_port, "--http-port"),
        ("gRPC", config.grpc_port, "--grpc-port"),
        ("metrics", config.metrics_port, "--metrics-port"),
    ):
        error = bind_error(config.host, port)
        if error is None:
            continue
        if error.errno != errno.EADDRINUSE:
            raise _address_error(config.host, error)
        busy.append(f"{name} port {port} ({option})")
    if busy:
        raise PortInUseError(
            f"port in use on {config.host}: {', '.join(busy)}; stop the process holding it "
            "or choose another port with the option shown"
        )


def build_command(
    config: ServerConfig, install: TritonInstallation, backends: Path, view: Path, server_id: str
) -> list[str]:
    """The tritonserver command line (every flag checked against ``tritonserver --help`` of 2.51).

    Poll mode over the serving view: Triton loads what the view holds and follows its changes, and
    refuses load/unload requests, so no admin token exists (on the command line or anywhere else).
    ``--id`` lets a readiness probe tell this server from another one answering on the same port.
    """
    cmd = [
        str(install.binary),
        f"--id={server_id}",
        f"--model-repository={view}",
        f"--model-config-name={MODEL_CONFIG_NAME}",
        "--model-control-mode=poll",
        f"--repository-poll-secs={config.poll_secs}",
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
        f"--log-verbose={config.log_verbose}",
        *config.extra_args,
    ]
    return cmd


def choose_models(config: ServerConfig, *, quiet: bool = False) -> tuple[list[str], dict[str, str]]:
    """The models to load and {model: why not} for the others (logged at INFO unless ``quiet``).

    Raises:
        NoModelsError: if the repository is missing, a requested model cannot be served, or none can.
    """
    if not config.repo.is_dir():
        raise NoModelsError(f"model repository {config.repo} does not exist (export first: export/export.py)")
    load, skipped = servable_models(config.repo, cpu=True)
    if config.models is not None:
        unknown = [m for m in config.models if m not in load]
        if unknown:
            why = [f"{m}: {skipped.get(m, 'not in the repository')}" for m in unknown]
            raise NoModelsError(f"cannot serve {'; '.join(why)}")
        wanted = with_dependencies(config.models, load)
        skipped.update({m: "not requested" for m in load if m not in wanted})
        load = [m for m in load if m in wanted]
    for name, reason in skipped.items():
        log.log(logging.DEBUG if quiet else logging.INFO, "not loading %s: %s", name, reason)
    if not load:
        detail = "; ".join(f"{m}: {r}" for m, r in skipped.items()) or "it holds no model directory"
        raise NoModelsError(
            f"no model in {config.repo} can be served on this CPU host ({detail}); "
            "export one with: python export/export.py --formats torchscript,onnx"
        )
    return load, skipped


def with_dependencies(models: tuple[str, ...] | list[str], servable: list[str]) -> set[str]:
    """``models`` plus what their image pipelines need: the classifier and the preprocessing step."""
    wanted = set(models)
    for name in models:
        classifier = classifier_of(name)
        if classifier is not None:
            wanted.add(classifier)
            variants = (m.removesuffix(PREPROCESS_SUFFIX) for m in servable if m.endswith(PREPROCESS_SUFFIX))
            wanted.update(v + PREPROCESS_SUFFIX for v in variants if name.startswith(v + "_"))
    return wanted
