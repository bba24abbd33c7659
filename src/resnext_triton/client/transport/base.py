"""A small protocol-neutral layer over tritonclient's gRPC and HTTP clients.

Both protocols return the same plain dicts (metadata, config, repository index) and raise the
client's own exceptions: :class:`~.errors.ServerUnavailable` for anything that means "cannot talk
to the server" (refused, reset, timed out, unavailable), so that callers can retry exactly those.

tritonclient's gRPC client is thread-safe and shared by every request thread; its HTTP client is
not (it runs on gevent), so each request thread gets its own HTTP connection
(:meth:`Transport.infer_session`).
"""

from __future__ import annotations

import abc
import logging
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnext_triton.client.errors import ClientError, InferenceError, ServerUnavailable

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
PROTOCOLS = tuple(DEFAULT_PORTS)
# gRPC status codes (str(grpc.StatusCode.X)) that mean the server could not be reached.
_GRPC_UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")


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


class Restricted(ClientError):
    """The server refuses an API without an admin token (e.g. the model-repository API)."""


@dataclass(frozen=True)
class InferRequest:
    """One batch for one model: input name, datatype, data; output name and optional class_count."""

    model: str
    input_name: str
    datatype: str
    data: np.ndarray
    output_name: str
    class_count: int = 0


class Transport(abc.ABC):
    """Control calls (health, index, metadata, config) and inference over one protocol."""

    protocol: str

    def __init__(self, url: str, *, timeout_s: float, request_timeout_s: float):
        self.url = url
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s

    @abc.abstractmethod
    def server_live(self) -> bool:
        """Whether the server answers its liveness probe.

        Raises:
            ServerUnavailable: if it cannot be reached.
        """

    @abc.abstractmethod
    def server_ready(self) -> bool:
        """Whether the server is ready.

        Raises:
            ServerUnavailable: if it cannot be reached.
        """

    @abc.abstractmethod
    def model_ready(self, model: str) -> bool:
        """Whether a model is ready.

        Raises:
            ServerUnavailable: if the server cannot be reached.
        """

    @abc.abstractmethod
    def repository_index(self) -> list[dict[str, Any]] | None:
        """The repository index: one dict per model version with name, version, state, reason.

        None when the server restricts the model-repository API (it needs an admin token).

        Raises:
            ServerUnavailable: if the server cannot be reached.
        """

    @abc.abstractmethod
    def model_metadata(self, model: str) -> dict[str, Any]:
        """The model's metadata (``inputs``/``outputs`` with name, datatype, shape as ints).

        Raises:
            ServerUnavailable: if the server cannot be reached.
            ClientError: if the server refuses (e.g. unknown model).
        """

    @abc.abstractmethod
    def model_config(self, model: str) -> dict[str, Any]:
        """The model's configuration as a dict (protobuf JSON field names).

        Raises:
            ServerUnavailable: if the server cannot be reached.
            ClientError: if the server refuses (e.g. unknown model).
        """

    @abc.abstractmethod
    def infer_session(self) -> AbstractContextManager[InferSession]:
        """A context manager yielding a session for the calling thread's inference requests."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections."""


class InferSession(abc.ABC):
    """Sends inference requests from one thread."""

    @abc.abstractmethod
    def infer(self, request: InferRequest) -> np.ndarray:
        """Run one request and return its output array.

        Raises:
            ServerUnavailable: if the server cannot be reached.
            InferenceError: if the server rejects or fails the request.
        """


def _infer_error(exc: Exception) -> InferenceError:
    return InferenceError(f"inference failed: {exc}")


# --------------------------------------------------------------------------------------------- gRPC


class GrpcTransport(Transport):
    """tritonclient.grpc: one thread-safe client shared by all threads."""

    protocol = "grpc"

    def __init__(self, url: str, *, timeout_s: float, request_timeout_s: float):
        super().__init__(url, timeout_s=timeout_s, request_timeout_s=request_timeout_s)
        import tritonclient.grpc as grpcclient

        self._module = grpcclient
        try:
            self._client = grpcclient.InferenceServerClient(url)
        except Exception as exc:  # tritonclient raises bare Exception for a bad URL
            raise ClientError(f"cannot create a gRPC client for {url}: {exc}") from exc

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return getattr(self._client, name)(*args, client_timeout=self.timeout_s, **kwargs)
        except InferenceServerException as exc:
            if "restricted" in str(exc.message()).lower():  # Triton answers UNAVAILABLE for these
                raise Restricted(str(exc.message())) from exc
            if str(exc.status()) in _GRPC_UNREACHABLE:
                raise ServerUnavailable(_grpc_reason(exc)) from exc
            raise ClientError(str(exc.message())) from exc

    def server_live(self) -> bool:  # noqa: D102
        return bool(self._call("is_server_live"))

    def server_ready(self) -> bool:  # noqa: D102
        return bool(self._call("is_server_ready"))

    def model_ready(self, model: str) -> bool:  # noqa: D102
        return bool(self._call("is_model_ready", model))

    def repository_index(self) -> list[dict[str, Any]] | None:  # noqa: D102
        try:
            return list(self._call("get_model_repository_index", as_json=True).get("models", []))
        except Restricted:
            return None

    def model_metadata(self, model: str) -> dict[str, Any]:  # noqa: D102
        meta = dict(self._call("get_model_metadata", model, as_json=True))
        for key in ("inputs", "outputs"):
            for tensor in meta.get(key, []):
                tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
        return meta

    def model_config(self, model: str) -> dict[str, Any]:  # noqa: D102
        return dict(self._call("get_model_config", model, as_json=True).get("config", {}))

    @contextmanager
    def infer_session(self) -> Iterator[InferSession]:  # noqa: D102
        yield _GrpcSession(self)

    def close(self) -> None:  # noqa: D102
        self._client.close()


class _GrpcSession(InferSession):
    def __init__(self, transport: GrpcTransport):
        self._t = transport

    def infer(self, request: InferRequest) -> np.ndarray:
        """Run one request."""
        from tritonclient.utils import InferenceServerException

        grpcclient = self._t._module
        tensor = grpcclient.InferInput(request.input_name, list(request.data.shape), request.datatype)
        tensor.set_data_from_numpy(request.data)
        output = grpcclient.InferRequestedOutput(request.output_name, class_count=request.class_count)
        try:
            result = self._t._client.infer(
                request.model, [tensor], outputs=[output], client_timeout=self._t.request_timeout_s
            )
        except InferenceServerException as exc:
            if str(exc.status()) == "StatusCode.UNAVAILABLE":
                raise ServerUnavailable(f"lost Triton at {self._t.url} (gRPC): {_grpc_reason(exc)}") from exc
            raise _infer_error(exc) from exc
        return _output(result, request.output_name)


# --------------------------------------------------------------------------------------------- HTTP


class HttpTransport(Transport):
    """tritonclient.http: a client per thread (the HTTP client is not thread-safe)."""

    protocol = "http"

    def __init__(self, url: str, *, timeout_s: float, request_timeout_s: float):
        super().__init__(url, timeout_s=timeout_s, request_timeout_s=request_timeout_s)
        import tritonclient.http as httpclient

        self._module = httpclient
        self._client = self._new_client(network_timeout_s=timeout_s)

    def _new_client(self, *, network_timeout_s: float) -> Any:
        try:
            return self._module.InferenceServerClient(
                self.url, connection_timeout=self.timeout_s, network_timeout=network_timeout_s
            )
        except Exception as exc:  # tritonclient raises bare Exception for a bad URL
            raise ClientError(f"cannot create an HTTP client for {self.url}: {exc}") from exc

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return getattr(self._client, name)(*args, **kwargs)
        except InferenceServerException as exc:
            if str(exc.status()) == "403" or "restricted" in str(exc.message()).lower():
                raise Restricted(str(exc.message())) from exc
            raise ClientError(str(exc.message())) from exc
        except OSError as exc:  # refused, reset, timed out, unknown host
            raise ServerUnavailable(_describe(exc)) from exc

    def server_live(self) -> bool:  # noqa: D102
        return bool(self._call("is_server_live"))

    def server_ready(self) -> bool:  # noqa: D102
        return bool(self._call("is_server_ready"))

    def model_ready(self, model: str) -> bool:  # noqa: D102
        return bool(self._call("is_model_ready", model))

    def repository_index(self) -> list[dict[str, Any]] | None:  # noqa: D102
        try:
            return list(self._call("get_model_repository_index"))
        except Restricted:
            return None

    def model_metadata(self, model: str) -> dict[str, Any]:  # noqa: D102
        meta = dict(self._call("get_model_metadata", model))
        for key in ("inputs", "outputs"):
            for tensor in meta.get(key, []):
                tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
        return meta

    def model_config(self, model: str) -> dict[str, Any]:  # noqa: D102
        return dict(self._call("get_model_config", model))

    @contextmanager
    def infer_session(self) -> Iterator[InferSession]:  # noqa: D102
        client = self._new_client(network_timeout_s=self.request_timeout_s)
        try:
            yield _HttpSession(self, client)
        finally:
            client.close()

    def close(self) -> None:  # noqa: D102
        self._client.close()


class _HttpSession(InferSession):
    def __init__(self, transport: HttpTransport, client: Any):
        self._t = transport
        self._client = client

    def infer(self, request: InferRequest) -> np.ndarray:
        """Run one request."""
        from tritonclient.utils import InferenceServerException

        httpclient = self._t._module
        tensor = httpclient.InferInput(request.input_name, list(request.data.shape), request.datatype)
        tensor.set_data_from_numpy(request.data, binary_data=True)
        output = httpclient.InferRequestedOutput(request.output_name, binary_data=True, class_count=request.class_count)
        try:
            result = self._client.infer(request.model, [tensor], outputs=[output])
        except InferenceServerException as exc:
            raise _infer_error(exc) from exc
        except TimeoutError as exc:
            raise InferenceError(f"inference timed out after {self._t.request_timeout_s:g} s") from exc
        except OSError as exc:
            raise ServerUnavailable(f"lost Triton at {self._t.url} (HTTP): {_describe(exc)}") from exc
        return _output(result, request.output_name)


def _grpc_reason(exc: Any) -> str:
    message = str(exc.message())
    if "connection refused" in message.lower():
        return "connection refused"
    if str(exc.status()) == "StatusCode.DEADLINE_EXCEEDED":
        return "timed out"
    return message


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({text})"
    return text


def _output(result: Any, name: str) -> np.ndarray:
    array = result.as_numpy(name)
    if array is None:
        raise InferenceError(f"the server's response has no output {name!r}")
    return np.asarray(array)


def make_transport(protocol: str, url: str, *, timeout_s: float, request_timeout_s: float) -> Transport:
    """A transport for ``"grpc"`` or ``"http"``.

    Raises:
        ValueError: for another protocol.
        ClientError: if tritonclient cannot create a client for the URL.
    """
    if protocol == "grpc":
        return GrpcTransport(url, timeout_s=timeout_s, request_timeout_s=request_timeout_s)
    if protocol == "http":
        return HttpTransport(url, timeout_s=timeout_s, request_timeout_s=request_timeout_s)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
