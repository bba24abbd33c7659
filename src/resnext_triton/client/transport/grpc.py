"""The gRPC transport: tritonclient.grpc, one thread-safe client shared by every thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from resnext_triton.client.errors import ClientError, InferenceError, ServerUnavailable
from resnext_triton.client.transport.base import InferRequest, InferSession, Restricted, Transport

# gRPC status codes (str(grpc.StatusCode.X)) that mean the server could not be reached.
_GRPC_UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
# The field of a gRPC answer (as JSON) that holds what the HTTP API answers directly.
_ENVELOPES = {"get_model_repository_index": "models", "get_model_config": "config"}


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

    def _control(self, name: str, *args: Any, timeout_s: float, as_json: bool = False) -> Any:
        call = getattr(self._client, name)  # client_timeout is a gRPC deadline: a total limit
        if not as_json:
            return call(*args, client_timeout=timeout_s)
        answer = call(*args, client_timeout=timeout_s, as_json=True)
        field = _ENVELOPES.get(name)
        return answer.get(field, {}) if field else answer

    def _translate(self, exc: Any) -> ClientError:
        message = str(exc.message())
        if "restricted" in message.lower():  # Triton answers UNAVAILABLE for these
            return Restricted(message)
        if str(exc.status()) in _GRPC_UNREACHABLE:
            return ServerUnavailable(_grpc_reason(exc))
        return ClientError(message)

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
            raise InferenceError(f"inference failed: {exc}") from exc
        return self._output(result, request.output_name)


def _grpc_reason(exc: Any) -> str:
    message = str(exc.message())
    if "connection refused" in message.lower():
        return "connection refused"
    if str(exc.status()) == "StatusCode.DEADLINE_EXCEEDED":
        return "timed out"
    return message
