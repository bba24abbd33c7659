"""PyTorch -> TorchScript (traced, frozen) with Triton's ``<name>__<index>`` convention.

The traced module returns the tuple ``(logits, features)``: Triton's pytorch backend maps
``OUTPUT__0`` and ``FEATURES__1`` to its positions 0 and 1 by the index after ``__``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from resnext_triton.exporters import ExportError
from resnext_triton.model import WithFeatures
from resnext_triton.spec import ModelSpec


def export_torchscript(
    model: nn.Module,
    spec: ModelSpec,
    path: Path,
    *,
    device: str = "cpu",
    fp16: bool = False,
    channels_last: bool = False,
    freeze: bool = True,
) -> Path:
    """Trace ``model`` with both outputs (:class:`~resnext_triton.model.WithFeatures`) and save it.

    Args:
        model: the eager model with ``features()`` and ``fc`` (left unchanged: a copy is moved and cast).
        spec: the model spec (input shape).
        path: where to write ``model.pt``.
        device: ``cpu`` or ``cuda``; the saved module runs on the device it was traced on. Its
            convolutions never use TF32 (the flag is recorded at tracing time): FP32 means FP32.
        fp16: cast weights and the expected input to float16 (GPU targets).
        channels_last: trace in channels_last memory format (GPU targets, faster convolutions).
        freeze: inline parameters and fold constants (``torch.jit.freeze``).

    Returns:
        ``path``.

    Raises:
        ExportError: if the model has no features to export, or the traced module does not return
            the two outputs at the spec's shapes.
    """
    import copy

    try:
        work: nn.Module = WithFeatures(copy.deepcopy(model)).eval().to(device)
    except TypeError as exc:
        raise ExportError(str(exc)) from exc
    dtype = torch.float16 if fp16 else torch.float32
    work = work.to(dtype=dtype)
    example = torch.randn(2, *spec.input_shape, device=device, dtype=dtype)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        example = example.contiguous(memory_format=torch.channels_last)
    cudnn = torch.backends.cudnn
    # Tracing records each convolution's allow_tf32 flag in the graph: trace with TF32 off, so that an
    # FP32 model runs its convolutions in FP32 wherever it is loaded (FP16 ones are unaffected).
    no_tf32 = cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                          allow_tf32=False)
    with torch.inference_mode(False), torch.no_grad(), no_tf32:
        traced = torch.jit.trace(work, example, check_trace=False)
        if freeze:
            traced = torch.jit.freeze(traced)
        _check_outputs(traced(example), spec, len(example))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path))
    return path


def _check_outputs(result: object, spec: ModelSpec, batch: int) -> None:
    """The traced module must return ``(logits, features)`` at the spec's widths.

    Raises:
        ExportError: otherwise.
    """
    shapes = [tuple(t.shape) for t in result] if isinstance(result, tuple | list) else [tuple(result.shape)]  # type: ignore[attr-defined]
    expected = [(batch, spec.num_classes), (batch, spec.feature_dim)]
    if shapes != expected:
        raise ExportError(f"the traced module returns {shapes}, expected (logits, features) {expected}")
