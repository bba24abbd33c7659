"""``LocalTriton``: a local Triton for the lifetime of a ``with`` block (tests and benchmarks use it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from resnext_triton.triton.local import supervise
from resnext_triton.triton.local.errors import ServerError
from resnext_triton.triton.local.launch import ServerConfig
from resnext_triton.triton.local.state import ADMIN_HEADER, GRPC_ADMIN_HEADER, ServerState, log_tail, repository_token


class LocalTriton:
    """A local Triton for the lifetime of a ``with`` block.

    It stops the server on exit only if it started it (a server already running for the same
    state directory is reused and left running).
    """

    def __init__(self, config: ServerConfig | None = None, **overrides: Any) -> None:
        base = config or ServerConfig()
        self.config = replace(base, **overrides) if overrides else base
        self.result: supervise.StartResult | None = None

    def start(self) -> LocalTriton:
        """Start (or reuse) the server and wait until it is ready."""
        self.result = supervise.start(self.config)
        return self

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if self.result is not None and not self.result.already_running:
            supervise.stop(Path(self.result.state.state_dir))
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
