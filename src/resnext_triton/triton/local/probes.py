"""HTTP probes of a running Triton with the standard library (no client library needed)."""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
import zlib
from typing import Any

from resnext_triton.triton.local.state import ServerState

# What a probe of a server that is not (yet) there raises: refused, reset, timed out, bad URL.
PROBE_ERRORS = (OSError, urllib.error.URLError)

_DTYPES = {"TYPE_FP32": ("FP32", 4), "TYPE_FP16": ("FP16", 2), "TYPE_UINT8": ("UINT8", 1), "TYPE_INT8": ("INT8", 1)}


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


def post(
    url: str, *, timeout_s: float = 5.0, headers: dict[str, str] | None = None, data: bytes = b"{}"
) -> tuple[int, bytes]:
    """(status, body) of a POST (of ``{}`` unless ``data`` is given); an HTTP error status is returned, not raised.

    Raises:
        OSError: (urllib.error.URLError included) when the server cannot be reached.
    """
    return _request(urllib.request.Request(url, data=data, method="POST", headers=headers or {}), timeout_s)


def _get_json(url: str, timeout_s: float) -> Any:
    try:
        code, body = get(url, timeout_s=timeout_s)
        return json.loads(body) if code == 200 else None
    except (*PROBE_ERRORS, ValueError):
        return None


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


def server_metadata(http_url: str, *, timeout_s: float = 2.0) -> dict[str, Any]:
    """``/v2`` (name, version, extensions), or {} if the server does not answer."""
    data = _get_json(f"{http_url}/v2", timeout_s)
    return data if isinstance(data, dict) else {}


def server_version(http_url: str, *, timeout_s: float = 2.0) -> str:
    """Triton's version from server metadata ('' if it does not answer)."""
    return str(server_metadata(http_url, timeout_s=timeout_s).get("version", ""))


def server_id(http_url: str, *, timeout_s: float = 2.0) -> str:
    """The ``--id`` of the server answering at ``http_url`` (its metadata ``name``; '' if none answers)."""
    return str(server_metadata(http_url, timeout_s=timeout_s).get("name", ""))


def repository_index(http_url: str, *, timeout_s: float = 5.0) -> list[dict[str, Any]] | None:
    """The repository index (one entry per model version), or None if the server does not answer."""
    try:
        code, body = post(f"{http_url}/v2/repository/index", timeout_s=timeout_s)
        index = json.loads(body) if code == 200 else None
    except (*PROBE_ERRORS, ValueError):
        return None
    return [m for m in index if isinstance(m, dict) and "name" in m] if isinstance(index, list) else None


def collapse_index(index: list[dict[str, Any]]) -> dict[str, str]:
    """{model: READY if any version is ready, else the state of its newest entry}."""
    states: dict[str, str] = {}
    for entry in index:
        name, state = str(entry["name"]), str(entry.get("state") or "UNAVAILABLE")
        if states.get(name) != "READY":
            states[name] = state
    return states


def model_states(state: ServerState) -> dict[str, str]:
    """{model: state} from the repository index, else READY/UNAVAILABLE per model the server should load."""
    index = repository_index(state.http_url)
    if index is not None:
        return collapse_index(index)
    return {name: "READY" if model_ready(state.http_url, name) else "UNAVAILABLE" for name in state.models}


def model_config(http_url: str, model: str, *, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """The configuration Triton serves for ``model`` (None if it does not answer)."""
    data = _get_json(f"{http_url}/v2/models/{model}/config", timeout_s)
    return data if isinstance(data, dict) else None


def model_versions(http_url: str, model: str, *, timeout_s: float = 5.0) -> set[int] | None:
    """The versions of ``model`` the server has loaded (empty if none; None if the server does not answer)."""
    try:
        code, body = get(f"{http_url}/v2/models/{model}", timeout_s=timeout_s)
    except PROBE_ERRORS:
        return None
    if code != 200:
        return set()  # unknown or not loaded: Triton answers 400 with an error
    try:
        return {int(v) for v in json.loads(body).get("versions", []) if str(v).isdigit()}
    except (ValueError, AttributeError):
        return set()


def tiny_png() -> bytes:
    """A valid 2x2 RGB PNG: an image the preprocessing step decodes (for probing image models)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80\x40\x20" * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def infer_probe(http_url: str, config: dict[str, Any], *, timeout_s: float = 30.0) -> bool:
    """True if one real request (batch 1: zeros, or a tiny PNG for a byte-image input) succeeds.

    Args:
        http_url: the server.
        config: the model's served configuration (:func:`model_config`).
        timeout_s: how long the inference may take.
    """
    inputs = config.get("input") or []
    if not inputs:
        return False
    first = inputs[0]
    datatype, size = _DTYPES.get(str(first.get("data_type")), ("", 0))
    if not datatype:
        return False
    dims = [int(d) for d in first.get("dims", [])]
    if dims == [-1] and datatype == "UINT8":
        payload = tiny_png()
        dims = [len(payload)]
    else:
        if any(d < 0 for d in dims):
            return False
        count = 1
        for d in dims:
            count *= d
        payload = bytes(count * size)
    shape = ([1] if int(config.get("max_batch_size", 0)) > 0 else []) + dims
    header = json.dumps(
        {"inputs": [{"name": first["name"], "shape": shape, "datatype": datatype,
                     "parameters": {"binary_data_size": len(payload)}}]}
    ).encode()  # fmt: skip
    url = f"{http_url}/v2/models/{config['name']}/infer"
    try:
        code, _ = post(url, data=header + payload, timeout_s=timeout_s,
                       headers={"Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    except PROBE_ERRORS:
        return False
    return code == 200
