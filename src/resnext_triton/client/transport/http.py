"""The HTTP transport: tritonclient.http, a client per thread (the HTTP client is not thread-safe).

tritonclient's HTTP client runs on gevent, so each request thread gets its own connection
(:meth:`HttpTransport.infer_session`) while the control calls share one.

tritonclient's ``network_timeout`` bounds each socket read, not a call: a server that trickles its
answer a byte at a time would hold a call forever. Every call therefore runs under a
``gevent.Timeout`` of its whole limit (:func:`within`), and a client whose call was cut off or
whose connection broke is replaced by a fresh one (its connection is in an unknown state).
"""

from __future__ import annotations

import http.client
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

BROKEN_CONNECTION = (OSError, http.client.HTTPException)
"""What a broken exchange raises: refused, reset, timed out (OSError); closed before or in the
middle of the answer, or garbled (geventhttpclient's ``HTTPConnectionClosed`` and parse errors are
``http.client.HTTPException``)."""


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Run a block of gevent socket work within ``seconds`` in all.

    Raises:
        TimeoutError: if the block takes longer (it is interrupted at the limit).
    """
    import gevent

    timer = gevent.Timeout(seconds)  # a BaseException: nothing in geventhttpclient swallows it
    timer.start()
    try:
        yield
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise TimeoutError(f"timed out after {seconds:g} s") from None
    finally:
        timer.close()


class HttpTransport(Transport):
    """tritonclient.http: a client per thread (the HTTP client is not thread-safe)."""

    protocol = "http"
    _network_errors = BROKEN_CONNECTION

    def __init__(self, url: str, *, timeout_s: float, request_timeout_s: float):
        super().__init__(url, timeout_s=timeout_s, request_timeout_s=request_timeout_s)
        import tritonclient.http as httpclient

        self._module = httpclient
        self._client = self.new_client(network_timeout_s=timeout_s)

    def new_client(self, *, network_timeout_s: float) -> Any:
        """A tritonclient HTTP client of this server (it connects on its first call).

        Raises:
            ClientError: if tritonclient refuses the URL.
        """
        try:
            return self._module.InferenceServerClient(
                self.url, connection_timeout=self.timeout_s, network_timeout=network_timeout_s
            )
        except Exception as exc:  # tritonclient raises bare Exception for a bad URL
            raise ClientError(f"cannot create an HTTP client for {self.url}: {exc}") from exc

    def _control(self, name: str, *args: Any, timeout_s: float, as_json: bool = False) -> Any:
        try:
            with within(timeout_s):
                return getattr(self._client, name)(*args)  # the HTTP client always answers JSON
        except (TimeoutError, *BROKEN_CONNECTION):
            self._client.close()
            self._client = self.new_client(network_timeout_s=self.timeout_s)
            raise

    def _translate(self, exc: Any) -> ClientError:
        message = str(exc.message())
        if str(exc.status()) == "403" or "restricted" in message.lower():
            return Restricted(message)
        return ClientError(message)

    @contextmanager
    def infer_session(self) -> Iterator[InferSession]:  # noqa: D102
        session = _HttpSession(self)
        try:
            yield session
        finally:
            session.close()

    def close(self) -> None:  # noqa: D102
        self._client.close()


class _HttpSession(InferSession):
    """One thread's connection; replaced after a request that was cut off or broke."""

    def __init__(self, transport: HttpTransport):
        self._t = transport
        self._client = transport.new_client(network_timeout_s=transport.request_timeout_s)

    def close(self) -> None:
        self._client.close()

    def _renew(self) -> None:
        self._client.close()
        self._client = self._t.new_client(network_timeout_s=self._t.request_timeout_s)

    def infer(self, request: InferRequest) -> np.ndarray:
        """Run one request within ``request_timeout_s`` in all."""
        from tritonclient.utils import InferenceServerException

        httpclient = self._t._module
        tensor = httpclient.InferInput(request.input_name, list(request.data.shape), request.datatype)
        tensor.set_data_from_numpy(request.data, binary_data=True)
        output = httpclient.InferRequestedOutput(request.output_name, binary_data=True, class_count=request.class_count)
        try:
            with within(self._t.request_timeout_s):
                result = self._client.infer(request.model, [tensor], outputs=[output])
        except InferenceServerException as exc:
            raise InferenceError(f"inference failed: {exc}") from exc
        except TimeoutError as exc:
            self._renew()
            raise InferenceError(f"inference timed out after {self._t.request_timeout_s:g} s") from exc
        except BROKEN_CONNECTION as exc:
            self._renew()
            raise self._broken(exc) from exc
        except ValueError as exc:  # an answer that is not Triton's
            raise InferenceError(f"unexpected answer from the server: {exc}") from exc
        return self._output(result, request.output_name)

    def _broken(self, exc: BaseException) -> ClientError:
        """What a broken exchange means: the server is gone, or it dropped this one request.

        A refused connection means the server is gone; otherwise its liveness is probed (within
        ``timeout_s``): a server that still answers failed this request only.
        """
        reason = describe_network_error(exc)
        lost = ServerUnavailable(f"lost Triton at {self._t.url} (HTTP): {reason}")
        if isinstance(exc, ConnectionRefusedError):
            return lost
        try:
            with within(self._t.timeout_s):
                live = bool(self._client.is_server_live())
        except (TimeoutError, *BROKEN_CONNECTION):
            self._renew()
            return lost
        except Exception:  # an odd answer to the probe: not a live Triton
            return lost
        return InferenceError(f"the server dropped the request: {reason}") if live else lost
