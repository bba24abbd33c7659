"""The client's exception root and its subclasses.

Two kinds of failure cross the client boundary:

* whole-run failures (:class:`ServerUnavailable`, :class:`ModelNotReady`, :class:`ClientError`),
  raised by :class:`~resnext_triton.client.classifier.TritonClassifier`;
* per-input failures (:class:`InputError` and its subclasses, and the shared preprocessing's
  :class:`~resnext_triton.preprocess.PreprocessError`; together :data:`INPUT_ERRORS`), which the classifier catches and
  reports in that input's :class:`~resnext_triton.client.results.ClassificationResult` while every
  other input completes.
"""

from __future__ import annotations

from resnext_triton.preprocess import PreprocessError


class ClientError(Exception):
    """Root of every error the client raises."""


class ServerUnavailable(ClientError):
    """The server cannot be reached (refused, timed out, not live or not ready)."""


class ModelNotReady(ClientError):
    """The server is up, but the requested model is unknown, not loaded or unusable."""


class InputError(ClientError):
    """One input cannot be classified; the others still are."""


class FetchError(InputError):
    """An input cannot be read: missing file, unreadable file, unreachable or failing URL."""


class InferenceError(InputError):
    """The server rejected or failed the request that carried this input."""


INPUT_ERRORS: tuple[type[Exception], ...] = (InputError, PreprocessError)
"""Every per-input failure: the client's own and the shared preprocessing's (not a usable image)."""

__all__ = [
    "INPUT_ERRORS",
    "ClientError",
    "FetchError",
    "InferenceError",
    "InputError",
    "ModelNotReady",
    "PreprocessError",
    "ServerUnavailable",
]
