"""The local launcher's exceptions, and reading Triton's log to tell which one a failed start was."""

from __future__ import annotations

import re
from pathlib import Path

from resnext_triton.triton.local.state import log_tail

_LOAD_FAILED = re.compile(r"failed to load '([^']+)'(?: version \d+)?: (.*)")
_CREATE_FAILED = re.compile(r"error: creating server: (.*)|failed to start \w+ service: (.*)")


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


class AddressError(ServerError):
    """The address to bind to is not one of this host's."""


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


def failure_from_log(log_file: Path, models: list[str]) -> ServerError:
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
    created = [m.group(1) or m.group(2) for line in text.splitlines() if (m := _CREATE_FAILED.search(line))]
    reason = created[-1].strip().rstrip('"').strip() if created else "see the log"
    if "address already in use" in text.lower() or "already in use" in reason:
        return PortInUseError(f"tritonserver could not bind its ports: {reason}", log_tail=tail)
    return ServerExitedError(f"tritonserver exited while starting: {reason}", log_tail=tail)
