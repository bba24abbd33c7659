"""What to launch: the server's configuration, its ports, the models it loads, the tritonserver command line."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from resnext_triton.triton.local.errors import NoModelsError, PortInUseError
from resnext_triton.triton.local.install import TritonInstallation
from resnext_triton.triton.local.state import (
    ADMIN_HEADER,
    DEFAULT_HOST,
    default_repository,
    default_state_dir,
    free_port,
    port_in_use,
)
from resnext_triton.triton.repository import servable_models

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_TIMEOUT_S = 180.0
MODEL_CONFIG_NAME = "cpu"
# Admin APIs that need the token: load/unload models, and change the server's tracing and logging.
RESTRICTED_APIS = ("model-repository", "trace", "logging")


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


def choose_models(config: ServerConfig) -> tuple[list[str], dict[str, str]]:
    """The models to load and {model: why not} for the others.

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
