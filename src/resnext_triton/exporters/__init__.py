"""Exporters: one converter per module (source2target), a validator, and the pipeline that runs them."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export step failed."""


class ValidationError(ExportError):
    """An exported artifact does not compute the same function as the eager model."""


class TensorRTUnavailable(ExportError):
    """TensorRT or a GPU is missing on this host."""
