"""HTTP probes of a running Triton with the standard library (no client library needed)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from resnext_triton.triton.local.state import ADMIN_HEADER, ServerState

# What a probe of a server that is not (yet) there raises: refused, reset, timed out, bad URL.
PROBE_ERRORS = (OSError, urllib.error.URLError)


def _request(request: urllib.request.Request, timeout_s: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def get(url: str, *, timeout_s: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET; an HTTP error status is returned, not raised.

    Raises:
        OSError: (urllib.error.URLError included) when the server cannot be reached.
    """
    return _request(urllib.request.Request(url, headers=headers or {}), timeout_s)


def post(url: str, *, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of a POST of ``{}``; an HTTP error status is returned, not raised.

    Raises:
        OSError: (urllib.error.URLError included) when the server cannot be reached.
    """
    return _request(urllib.request.Request(url, data=b"{}", method="POST", headers=headers or {}), timeout_s)


def is_ready(http_url: str, *, timeout_s: float = 2.0) -> bool:
    """True if ``/v2/health/ready`` answers 200 (with strict readiness: every loaded model is ready)."""
    try:
        return get(f"{http_url}/v2/health/ready", timeout_s=timeout_s)[0] == 200
    except PROBE_ERRORS:
        return False


def model_ready(http_url: str, model: str, *, timeout_s: float = 2.0) -> bool:
    """True if ``/v2/models/<model>/ready`` answers 200 (False if the server does not answer)."""
    try:
        return get(f"{http_url}/v2/models/{model}/ready", timeout_s=timeout_s)[0] == 200
    except PROBE_ERRORS:
        return False


def model_states(state: ServerState, token: str | None = None) -> dict[str, str]:
    """{model: state} from the repository index (needs the token), else READY/UNAVAILABLE per loaded model."""
    if token:
        try:
            code, body = post(f"{state.http_url}/v2/repository/index", headers={ADMIN_HEADER: token})
            if code == 200:
                index = json.loads(body)
                return {m["name"]: m.get("state") or "UNAVAILABLE" for m in index if "name" in m}
        except (*PROBE_ERRORS, ValueError):
            pass
    return {name: "READY" if model_ready(state.http_url, name) else "UNAVAILABLE" for name in state.models}


def server_version(http_url: str, *, timeout_s: float = 2.0) -> str:
    """Triton's version from server metadata ('' if it does not answer)."""
    try:
        code, body = get(f"{http_url}/v2", timeout_s=timeout_s)
        return str(json.loads(body).get("version", "")) if code == 200 else ""
    except (*PROBE_ERRORS, ValueError):
        return ""
