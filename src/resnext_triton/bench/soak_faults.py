"""The faults the soak test injects into a supervised local Triton, each a function of its state directory.

- ``kill-stub``: SIGKILL the Python-backend stub of the model under load (Triton keeps calling the
  model ready; the supervisor must notice and reload it);
- ``kill-server``: SIGKILL tritonserver while it is busy (the supervisor must clean up and restart);
- ``hostile``: the HTTP request with a huge declared shape that makes Triton 2.51 abort.
"""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resnext_triton.triton.local import procs
from resnext_triton.triton.local.state import VIEW_DIR, ServerState, running_state

HOSTILE_BODY = b'{"inputs":[{"name":"INPUT__0","shape":[2147483648,3,224,224],"datatype":"FP32","data":[0]}]}'


class FaultError(RuntimeError):
    """A fault could not be injected (nothing to kill: the server is down or restarting)."""


@dataclass(frozen=True)
class Target:
    """What the faults act on."""

    state_dir: Path
    model: str


def _state(target: Target) -> ServerState:
    state = running_state(target.state_dir)
    if state is None or state.pid <= 0:
        raise FaultError("no tritonserver runs now (restarting, or stopped)")
    return state


def kill_stub(target: Target) -> str:
    """SIGKILL the backend stub of the model under load.

    Raises:
        FaultError: if the server or the model's stub is not running.
    """
    state = _state(target)
    found = [s for s in procs.stubs(target.state_dir, target.state_dir / VIEW_DIR, server_pid=state.pid)
             if s.model == target.model]  # fmt: skip
    if not found:
        raise FaultError(f"no backend stub of {target.model} runs now")
    os.kill(found[0].pid, signal.SIGKILL)
    return f"SIGKILL to the stub of {target.model} (pid {found[0].pid})"


def kill_server(target: Target) -> str:
    """SIGKILL tritonserver.

    Raises:
        FaultError: if no tritonserver runs.
    """
    state = _state(target)
    os.kill(state.pid, signal.SIGKILL)
    return f"SIGKILL to tritonserver (pid {state.pid})"


def hostile_request(target: Target) -> str:
    """POST the request whose declared shape makes Triton 2.51 abort; returns what happened.

    Raises:
        FaultError: if no tritonserver runs.
    """
    state = _state(target)
    url = f"{state.http_url}/v2/models/{target.model}/infer"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=HOSTILE_BODY, method="POST"), timeout=30):
            return "hostile request answered 200 (Triton no longer aborts on it)"
    except urllib.error.HTTPError as exc:
        return f"hostile request refused with HTTP {exc.code} (Triton no longer aborts on it)"
    except OSError as exc:
        return f"hostile request: connection lost ({type(exc).__name__}), tritonserver pid {state.pid} aborted"


FAULTS: dict[str, Callable[[Target], str]] = {
    "kill-stub": kill_stub,
    "kill-server": kill_server,
    "hostile": hostile_request,
}
