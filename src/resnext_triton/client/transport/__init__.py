"""A small protocol-neutral layer over tritonclient's gRPC and HTTP clients.

:class:`~.base.Transport` writes the control calls (health, repository index, metadata, config)
once; :mod:`.grpc` and :mod:`.http` supply what differs per protocol. tritonclient's gRPC client
is thread-safe and shared by every request thread; its HTTP client is not, so each request thread
gets its own HTTP connection (:meth:`Transport.infer_session`).
"""

from __future__ import annotations

from resnext_triton.client.transport.base import InferRequest, InferSession, Restricted, Transport
from resnext_triton.client.transport.grpc import GrpcTransport
from resnext_triton.client.transport.http import HttpTransport

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
PROTOCOLS = tuple(DEFAULT_PORTS)
_TRANSPORTS: dict[str, type[Transport]] = {"grpc": GrpcTransport, "http": HttpTransport}


def default_url(protocol: str) -> str:
    """The standard local address of a protocol: ``127.0.0.1:8001`` (gRPC), ``127.0.0.1:8000`` (HTTP)."""
    return f"127.0.0.1:{DEFAULT_PORTS[protocol]}"


def normalize_url(url: str, protocol: str) -> str:
    """``host:port`` from a URL that may carry a scheme or a trailing slash; a bare host gets the default port."""
    for scheme in ("http://", "https://", "grpc://"):
        if url.lower().startswith(scheme):
            url = url[len(scheme) :]
    url = url.rstrip("/")
    if not url:
        return default_url(protocol)
    host = url.rsplit("]", 1)[-1] if url.startswith("[") else url
    if ":" not in host:
        url = f"{url}:{DEFAULT_PORTS[protocol]}"
    return url


def make_transport(protocol: str, url: str, *, timeout_s: float, request_timeout_s: float) -> Transport:
    """A transport for ``"grpc"`` or ``"http"``.

    Raises:
        ValueError: for another protocol.
        ClientError: if tritonclient cannot create a client for the URL.
    """
    if protocol not in _TRANSPORTS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    return _TRANSPORTS[protocol](url, timeout_s=timeout_s, request_timeout_s=request_timeout_s)


__all__ = [
    "DEFAULT_PORTS",
    "PROTOCOLS",
    "GrpcTransport",
    "HttpTransport",
    "InferRequest",
    "InferSession",
    "Restricted",
    "Transport",
    "default_url",
    "make_transport",
    "normalize_url",
]
