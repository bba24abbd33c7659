"""What every protocol shares: the control calls, written once, and the inference request and session.

Both protocols return the same plain dicts (metadata, config, repository index) and raise the
client's own exceptions: :class:`~resnext_triton.client.errors.ServerUnavailable` for anything
that means "cannot talk to the server" (refused, reset, timed out, unavailable), so that callers
can retry exactly those.

Each control call is one call of tritonclient's client (:meth:`Transport._control`, per protocol)
wrapped in one error translation (:meth:`Transport._call`); a protocol supplies only its client,
that call, how tritonclient's exceptions map to the client's, and its inference sessions.

Every time limit is a total one: a control call may take ``timeout_s`` at most, and the calls made
inside :meth:`Transport.deadline` share what is left of it; an inference request may take
``request_timeout_s`` in all, however slowly the server answers.
"""

from __future__ import annotations

import abc
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnext_triton.client.errors import ClientError, InferenceError, ServerUnavailable

LAST_TRY_S = 0.05
"""The least time a control call is given once a deadline has passed: a last try that can still
tell "connection refused" from a timeout."""


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


class InferSession(abc.ABC):
    """Sends inference requests from one thread."""

    @abc.abstractmethod
    def infer(self, request: InferRequest) -> np.ndarray:
        """Run one request and return its output array.

        Raises:
            ServerUnavailable: if the server cannot be reached.
            InferenceError: if the server rejects or fails the request.
        """

    @staticmethod
    def _output(result: Any, name: str) -> np.ndarray:
        """The named output of a tritonclient result.

        Raises:
            InferenceError: if the response lacks it.
        """
        array = result.as_numpy(name)
        if array is None:
            raise InferenceError(f"the server's response has no output {name!r}")
        return np.asarray(array)


class Transport(abc.ABC):
    """Control calls (health, index, metadata, config) and inference over one protocol."""

    protocol: str
    _network_errors: tuple[type[Exception], ...] = ()
    """Exceptions, besides tritonclient's own, that mean the server cannot be reached."""

    def __init__(self, url: str, *, timeout_s: float, request_timeout_s: float):
        self.url = url
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
        self._deadline: float | None = None

    # ---------------------------------------------------------------- what a protocol supplies

    @abc.abstractmethod
    def _control(self, name: str, *args: Any, timeout_s: float, as_json: bool = False) -> Any:
        """Call the tritonclient client's method ``name``, all of it within ``timeout_s`` seconds.

        With ``as_json``, the answer comes as plain dicts and lists shaped like the HTTP API's.

        Raises:
            TimeoutError: if the call takes longer.
        """

    @abc.abstractmethod
    def _translate(self, exc: Any) -> ClientError:
        """The client's exception for a tritonclient ``InferenceServerException`` of a control call."""

    @abc.abstractmethod
    def infer_session(self) -> AbstractContextManager[InferSession]:
        """A context manager yielding a session for the calling thread's inference requests."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections."""

    # ---------------------------------------------------------------- the control calls

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Make the control calls inside the block share one total limit of ``seconds``.

        Each call takes at most ``timeout_s`` and at most what is left of the block's time (a call
        made after the deadline gets a last try of :data:`LAST_TRY_S`).
        """
        saved = self._deadline
        self._deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            self._deadline = saved

    def _call_timeout(self) -> float:
        if self._deadline is None:
            return self.timeout_s
        return min(self.timeout_s, max(self._deadline - time.monotonic(), LAST_TRY_S))

    def _call(self, name: str, *args: Any, as_json: bool = False) -> Any:
        """One control call with the client's error translation.

        Raises:
            ServerUnavailable: if the server cannot be reached or does not answer in time.
            ClientError: if the server refuses (:class:`Restricted` for an API that needs a token),
                or its answer is not Triton's.
        """
        from tritonclient.utils import InferenceServerException

        try:
            return self._control(name, *args, timeout_s=self._call_timeout(), as_json=as_json)
        except InferenceServerException as exc:
            raise self._translate(exc) from exc
        except TimeoutError as exc:  # the call's whole limit is up
            raise ServerUnavailable(describe_network_error(exc)) from exc
        except self._network_errors as exc:  # refused, reset, closed, unknown host
            raise ServerUnavailable(describe_network_error(exc)) from exc
        except ValueError as exc:  # e.g. a web server that is not Triton answers HTML
            raise ClientError(f"the server at {self.url} does not answer like Triton ({name}: {exc})") from exc

    def server_live(self) -> bool:
        """Whether the server answers its liveness probe.

        Raises:
            ServerUnavailable: if it cannot be reached.
        """
        return bool(self._call("is_server_live"))

    def server_ready(self) -> bool:
        """Whether the server is ready.

        Raises:
            ServerUnavailable: if it cannot be reached.
        """
        return bool(self._call("is_server_ready"))

    def model_ready(self, model: str) -> bool:
        """Whether a model is ready.

        Raises:
            ServerUnavailable: if the server cannot be reached.
        """
        return bool(self._call("is_model_ready", model))

    def repository_index(self) -> list[dict[str, Any]] | None:
        """The repository index: one dict per model version with name, version, state, reason.

        None when the server restricts the model-repository API (it needs an admin token).

        Raises:
            ServerUnavailable: if the server cannot be reached.
        """
        try:
            return list(self._call("get_model_repository_index", as_json=True))
        except Restricted:
            return None

    def model_metadata(self, model: str) -> dict[str, Any]:
        """The model's metadata (``inputs``/``outputs`` with name, datatype, shape as ints).

        Raises:
            ServerUnavailable: if the server cannot be reached.
            ClientError: if the server refuses (e.g. unknown model).
        """
        meta = dict(self._call("get_model_metadata", model, as_json=True))
        for key in ("inputs", "outputs"):
            for tensor in meta.get(key, []):
                tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
        return meta

    def model_config(self, model: str) -> dict[str, Any]:
        """The model's configuration as a dict (protobuf JSON field names).

        Raises:
            ServerUnavailable: if the server cannot be reached.
            ClientError: if the server refuses (e.g. unknown model).
        """
        return dict(self._call("get_model_config", model, as_json=True))


def describe_network_error(exc: BaseException) -> str:
    """A short reason for a socket-level failure: connection refused, timed out, unknown host."""
    text = str(exc).rstrip(".") or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({text})"
    return text
