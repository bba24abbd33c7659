"""PyTorch -> TorchScript (traced, frozen) with Triton's ``INPUT__0``/``OUTPUT__0`` convention."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

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
    """Trace ``model`` and save it as a TorchScript file.

    Args:
        model: the eager model (left unchanged: a copy is moved and cast).
        spec: the model spec (input shape).
        path: where to write ``model.pt``.
        device: ``cpu`` or ``cuda``; the saved module runs on the device it was traced on.
        fp16: cast weights and the expected input to float16 (GPU targets).
        channels_last: trace in channels_last memory format (GPU targets, faster convolutions).
        freeze: inline parameters and fold constants (``torch.jit.freeze``).

    Returns:
        ``path``.
    """
    import copy

    work = copy.deepcopy(model).eval().to(device)
    dtype = torch.float16 if fp16 else torch.float32
    work = work.to(dtype=dtype)
    example = torch.randn(2, *spec.input_shape, device=device, dtype=dtype)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        example = example.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(work, example, check_trace=False)
        if freeze:
            traced = torch.jit.freeze(traced)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path))
    return path
