"""PyTorch -> ONNX with a dynamic batch axis and named tensors, checked with ``onnx.checker``.

Two outputs, named after the spec: the logits (``OUTPUT__0``) and the pooled features before
``fc`` (``FEATURES__1``), the names the Triton configs use for every backend.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from resnext_triton.exporters import ExportError
from resnext_triton.model import WithFeatures
from resnext_triton.spec import ModelSpec

log = logging.getLogger(__name__)

MIN_OPSET = 17
DEFAULT_OPSET = 18


def export_onnx(model: nn.Module, spec: ModelSpec, path: Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``model`` to a single-file ONNX model and run the checker's full check.

    The batch axis is dynamic (named ``batch``) on the input and both outputs; the tensors are named
    after the spec (``INPUT__0``; ``OUTPUT__0`` the logits, ``FEATURES__1`` the features), the
    same names the Triton config uses.

    Raises:
        ExportError: if the opset is too old, the model has no features to export, the export
            fails or the checker rejects the model.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    try:
        both = WithFeatures(model).eval()
    except TypeError as exc:
        raise ExportError(str(exc)) from exc
    example = torch.randn(2, *spec.input_shape)
    batch = torch.export.Dim("batch", min=1, max=1024)
    path.parent.mkdir(parents=True, exist_ok=True)
    chatter = io.StringIO()
    # The exporter warns about every torchvision op it cannot register; the model uses none.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                both,
                (example,),
                str(path),
                input_names=[spec.input_name],
                output_names=[spec.output_name, spec.features_name],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        log.debug("torch.onnx output:\n%s", chatter.getvalue())
        raise ExportError(f"ONNX export failed: {exc}") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected {path}: {exc}") from exc
    _check_interface(onnx.load(str(path), load_external_data=False), spec)
    return path


def _check_interface(proto: object, spec: ModelSpec) -> None:
    graph = proto.graph  # type: ignore[attr-defined]
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != [spec.input_name] or outputs != [spec.output_name, spec.features_name]:
        raise ExportError(f"ONNX model has inputs {inputs} and outputs {outputs}, expected the spec's names")
    widths = {spec.output_name: spec.num_classes, spec.features_name: spec.feature_dim}
    for value in (graph.input[0], *graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims[0].dim_param:
            raise ExportError(f"ONNX tensor {value.name} has a fixed batch dimension ({dims[0].dim_value})")
        if value.name in widths and [d.dim_value for d in dims[1:]] != [widths[value.name]]:
            raise ExportError(f"ONNX output {value.name} has shape {[d.dim_value for d in dims]}, "
                              f"expected [batch, {widths[value.name]}]")
