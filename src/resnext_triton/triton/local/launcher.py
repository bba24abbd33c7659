"""``LocalTriton``: a local Triton for the lifetime of a ``with`` block (tests and benchmarks use it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from resnext_triton.triton.local import control
from resnext_triton.triton.local.errors import ServerError
from resnext_triton.triton.local.launch import ServerConfig
from resnext_triton.triton.local.state import ServerState, log_tail, running_state


class LocalTriton:
    """A local Triton for the lifetime of a ``with`` block (supervised: restarted if it dies).

    It stops the server on exit only if it started it (a server already running for the same
    state directory is reused and left running).
    """

    def __init__(self, config: ServerConfig | None = None, **overrides: Any) -> None:
        base = config or ServerConfig()
        self.config = replace(base, **overrides) if overrides else base
        self.result: control.StartResult | None = None

    def start(self) -> LocalTriton:
        """Start (or reuse) the server and wait until it is ready."""
        self.result = control.start(self.config)
        return self

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if self.result is not None and not self.result.already_running:
            control.stop(Path(self.result.state.state_dir))
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
        """The models in the serving view at start."""
        return list(self.state.models)

    def current_state(self) -> ServerState:
        """The server's state as its supervisor last wrote it (pid, restarts, phase, health).

        Raises:
            ServerError: if the server is not started or its supervisor no longer runs.
        """
        state = running_state(Path(self.state.state_dir))
        if state is None:
            raise ServerError(f"no supervisor runs for {self.state.state_dir}")
        return state

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        return log_tail(self.state.log_file, lines)
