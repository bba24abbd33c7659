"""Where the benchmarks send their requests: a local Triton they start, or URLs of a running one.

A local server is started through :class:`resnext_triton.triton.local.LocalTriton` on free
loopback ports with a private state directory (so it never collides with a server someone else
runs from the same checkout), and stopped afterwards; its log is copied into the run directory.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from resnext_triton.bench.perf import PROTOCOLS
from resnext_triton.triton.local import probes

LOOPBACK = "127.0.0.1"
PROBE_TIMEOUT_S = 5.0


class EndpointError(ValueError):
    """A server URL given on the command line cannot be used."""


@dataclass
class Endpoints:
    """The server's address per protocol (``host:port``, the form perf_analyzer takes)."""

    urls: dict[str, str] = field(default_factory=dict)
    version: str = ""
    started_locally: bool = False
    log_file: Path | None = None

    @property
    def http_base(self) -> str | None:
        """``http://host:port`` when an HTTP endpoint is known."""
        return f"http://{self.urls['http']}" if "http" in self.urls else None


def parse_url(text: str) -> tuple[str, str]:
    """``("grpc", "127.0.0.1:8001")`` from ``grpc://127.0.0.1:8001`` (``http://`` likewise).

    Raises:
        EndpointError: without a ``grpc://`` or ``http://`` scheme, or without a port.
    """
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in PROTOCOLS:
        raise EndpointError(f"URL {text!r} needs a scheme: grpc://HOST:PORT or http://HOST:PORT")
    rest = rest.rstrip("/")
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise EndpointError(f"URL {text!r} needs HOST:PORT")
    return scheme.lower(), rest


def endpoints_from_urls(urls: Sequence[str]) -> Endpoints:
    """Endpoints from ``-u`` arguments (one per protocol at most).

    Raises:
        EndpointError: on a malformed URL or two URLs for one protocol.
    """
    found: dict[str, str] = {}
    for text in urls:
        protocol, address = parse_url(text)
        if protocol in found:
            raise EndpointError(f"two URLs for {protocol}: {found[protocol]} and {address}")
        found[protocol] = address
    endpoints = Endpoints(urls=found)
    if endpoints.http_base:
        endpoints.version = probes.server_version(endpoints.http_base, timeout_s=PROBE_TIMEOUT_S)
    return endpoints


def model_ready(endpoints: Endpoints, model: str) -> bool:
    """Whether ``model`` is ready (asked over HTTP, else over gRPC)."""
    if endpoints.http_base:
        return probes.model_ready(endpoints.http_base, model, timeout_s=PROBE_TIMEOUT_S)
    if "grpc" in endpoints.urls:
        import tritonclient.grpc as grpcclient

        try:
            client = grpcclient.InferenceServerClient(endpoints.urls["grpc"])
            try:
                return bool(client.is_model_ready(model))
            finally:
                client.close()
        except Exception:  # tritonclient raises its own and grpc's exception types
            return False
    return False


@contextlib.contextmanager
def local_triton(repo: Path, models: Sequence[str] | None, *, run_dir: Path, timeout_s: float = 300.0
                 ) -> Iterator[Endpoints]:
    """Start a local Triton on free 127.0.0.1 ports for the ``with`` block, then stop it.

    Raises:
        resnext_triton.triton.local.ServerError: if it cannot start or a model does not load.
    """
    from resnext_triton.triton.local import LocalTriton, ServerConfig

    state_dir = Path(tempfile.mkdtemp(prefix="resnext-bench-triton-"))
    config = ServerConfig(repo=repo.resolve(), state_dir=state_dir, host=LOOPBACK, http_port=0, grpc_port=0,
                          metrics_port=0, timeout_s=timeout_s, models=tuple(models) if models else None)
    server = LocalTriton(config)
    try:
        server.start()
        state = server.state
        yield Endpoints(urls={"grpc": state.grpc_url, "http": state.http_url.removeprefix("http://")},
                        version=state.version, started_locally=True, log_file=run_dir / "triton.log")
    finally:
        with contextlib.suppress(Exception):
            log = server.state.log_file if server.result is not None else state_dir / "triton.log"
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, run_dir / "triton.log")
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
