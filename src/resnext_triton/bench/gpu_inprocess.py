"""The GPU harness's in-process side: the served file timed here, and Triton checked against it.

* :func:`inprocess_baselines` times the exported TorchScript file (FP16 channels_last on a GPU)
  at each request batch size of the sweep, the denominator of "served / in-process". On a GPU
  there are two: the input copied from pinned host memory for every batch, as a served request's
  is, and the input already on the GPU (the model alone).
* :func:`served_agreement` sends the sample photos to the served model over gRPC and compares the
  logits with the same file run here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnext_triton.bench.baselines import BaselineResult, model_only


def load_torchscript(path: Path, device: str) -> tuple[Any, np.dtype]:
    """The TorchScript module on ``device`` and the numpy dtype it takes (float16 for an FP16 export)."""
    import torch

    from resnext_triton.runners import constant_dtype

    module = torch.jit.load(str(path), map_location=device).eval()
    params = list(module.parameters())
    # a frozen module holds its weights as graph constants, not parameters
    dtype = params[0].dtype if params else constant_dtype(module.graph)
    return module, np.dtype(np.float16 if dtype == torch.float16 else np.float32)


class TorchScriptCall:
    """``module(batch)`` on numpy batches, synchronized by copying the logits back to the host.

    Args:
        module: the loaded TorchScript module.
        device: ``cpu`` or ``cuda[:N]``.
        resident: keep the input on the device (converted once per distinct batch array) instead of
            copying it from pinned host memory on every call.
        channels_last: feed 4-D inputs in channels_last (the layout an FP16 export was traced in).
    """

    def __init__(self, module: Any, device: str, *, resident: bool = False, channels_last: bool = False) -> None:
        import torch

        self.torch, self.module, self.device = torch, module, torch.device(device)
        self.resident, self.channels_last = resident, channels_last
        self._cache: tuple[int, Any] | None = None

    def _prepare(self, batch: np.ndarray) -> Any:
        torch = self.torch
        if self._cache is None or self._cache[0] != id(batch):
            host = torch.from_numpy(np.ascontiguousarray(batch))
            if self.device.type == "cuda":
                host = host.pin_memory()
            self._cache = (id(batch), self._to_device(host) if self.resident else host)
        return self._cache[1]

    def _to_device(self, x: Any) -> Any:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self.torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits of one batch (the first output of a module that returns several), as float32 numpy."""
        x = self._prepare(batch)
        with self.torch.inference_mode():
            out = self.module(x if self.resident else self._to_device(x))
        return (out[0] if isinstance(out, (tuple, list)) else out).float().cpu().numpy()


def inprocess_baselines(path: Path, device: str, images: np.ndarray, batches: Sequence[int], *, count: int,
                        echo: Callable[[str], None] = print) -> list[BaselineResult]:
    """Time the TorchScript file in this process at each batch size, on ``images`` cut round-robin.

    Args:
        path: the served ``model.pt``.
        device: ``cpu`` or ``cuda``.
        images: preprocessed photos (N, C, H, W) float32.
        batches: the batch sizes.
        count: images timed per batch size (at least 30 batches on a GPU, 3 on the CPU).
        echo: prints one line per result.
    """
    module, dtype = load_torchscript(path, device)
    half = dtype == np.float16
    what = f"TorchScript {'FP16 channels_last' if half else 'FP32'} in-process"
    variants = [(f"{what} (input from host memory)", False)]
    if device.startswith("cuda"):
        variants.append((f"{what} (input on the GPU)", True))
    results = []
    data = images.astype(dtype)
    for name, resident in variants:
        call = TorchScriptCall(module, device, resident=resident, channels_last=half)
        for batch in batches:
            least = 30 if device.startswith("cuda") else 3
            result = model_only(name, call, data, batch=batch, images=max(count, least * batch))
            result.note = f"{device}, {result.images} images"
            echo(f"  {name} b{batch}: {result.throughput:.1f} img/s, p50 {result.percentile_ms(50):.2f} ms/batch")
            results.append(result)
    return results


@dataclass(frozen=True)
class Agreement:
    """Served logits against the same file run in this process, on the sample photos."""

    photos: int
    top1_agree: int
    max_abs: float
    max_rel: float
    bound: float

    @property
    def ok(self) -> bool:
        """Same top-1 on every photo and max |diff| / max |logit| within ``bound``."""
        return self.top1_agree == self.photos and math.isfinite(self.max_rel) and self.max_rel <= self.bound

    def line(self) -> str:
        """One summary line."""
        verdict = "ok" if self.ok else "MISMATCH"
        return (f"served vs in-process on {self.photos} photos: top-1 {self.top1_agree}/{self.photos}, "
                f"max|diff| {self.max_abs:.2e}, relative {self.max_rel:.2e} (bound {self.bound:g}): {verdict}")


def compare_logits(served: np.ndarray, local: np.ndarray, bound: float) -> Agreement:
    """The agreement of two (N, classes) logit arrays."""
    served, local = served.astype(np.float64), local.astype(np.float64)
    diff = np.abs(served - local)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(local).max()) if local.size else 0.0
    max_rel = max_abs / max(scale, 1e-12) if np.isfinite(served).all() else math.inf
    top1 = int((served.argmax(axis=1) == local.argmax(axis=1)).sum())
    return Agreement(len(local), top1, max_abs, max_rel, bound)


def served_logits(grpc_url: str, model: str, input_name: str, output_name: str, batch: np.ndarray,
                  *, timeout_s: float = 120.0) -> np.ndarray:
    """The served model's output for one request holding ``batch`` (over gRPC, in the batch's dtype)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        request = grpcclient.InferInput(input_name, list(batch.shape), np_to_triton_dtype(batch.dtype))
        request.set_data_from_numpy(np.ascontiguousarray(batch))
        result = client.infer(model, [request], outputs=[grpcclient.InferRequestedOutput(output_name)],
                              client_timeout=timeout_s)
        return np.asarray(result.as_numpy(output_name))
    finally:
        client.close()


def served_agreement(grpc_url: str, model: str, spec: Any, path: Path, device: str, images: np.ndarray) -> Agreement:
    """Compare the served model with its file run here, on ``images`` (float32 photos) in one request."""
    module, dtype = load_torchscript(path, device)
    batch = images.astype(dtype)
    served = served_logits(grpc_url, model, spec.input_name, spec.output_name, batch)
    local = TorchScriptCall(module, device, channels_last=dtype == np.float16)(batch)
    return compare_logits(served, local, bound=1e-2 if dtype == np.float16 else 1e-5)
