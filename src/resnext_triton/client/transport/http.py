"""The HTTP transport: tritonclient.http, a client per thread (the HTTP client is not thread-safe).

tritonclient's HTTP client runs on gevent, so each request thread gets its own connection
(:meth:`HttpTransport.infer_session`) while the control calls share one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from resnext_triton.client.errors import ClientError, InferenceError, ServerUnavailable
from resnext_triton.client.transport.base import (
    InferRequest,
    InferSession,
    Restricted,
    Transport,
    describe_network_error,
)


class HttpTransport(Transport):
    """tritonclient.http: a client per thread (the HTTP client is not thread-safe)."""

    protocol = "http"
    _network_errors = (OSError,)

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

    def _control(self, name: str, *args: Any, as_json: bool = False) -> Any:
        return getattr(self._client, name)(*args)  # the HTTP client always answers JSON

    def _translate(self, exc: Any) -> ClientError:
        message = str(exc.message())
        if str(exc.status()) == "403" or "restricted" in message.lower():
            return Restricted(message)
        return ClientError(message)

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
            raise InferenceError(f"inference failed: {exc}") from exc
        except TimeoutError as exc:
            raise InferenceError(f"inference timed out after {self._t.request_timeout_s:g} s") from exc
        except OSError as exc:
            raise ServerUnavailable(f"lost Triton at {self._t.url} (HTTP): {describe_network_error(exc)}") from exc
        return self._output(result, request.output_name)
