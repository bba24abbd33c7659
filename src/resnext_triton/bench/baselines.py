"""In-process baselines timed on the same real photos as the served models.

* :func:`hub_example` -- what NVIDIA's torch.hub example does, one batch at a time: PIL open,
  ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()``, normalize, ``torch.cat``, the eager model,
  softmax, top-5. torchvision does not import beside the project's torch build, so its transforms
  are written out here as torchvision implements them for PIL images (same sizes, same PIL
  bilinear filter, same crop offsets, same float math).
* :func:`model_only` -- a loaded TorchScript module or ONNX Runtime session
  (:mod:`resnext_triton.runners`, the runners export validation uses) on ready-made input
  batches (no decoding, no preprocessing): what the server's backend does per request.

Each returns a :class:`BaselineResult` in images/s with per-batch latency percentiles.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnext_triton.runners import OnnxRuntimeRunner, TorchScriptRunner
from resnext_triton.spec import Preprocessing

if TYPE_CHECKING:
    import torch


@dataclass
class BaselineResult:
    """Images/s and per-batch latency of one in-process baseline."""

    name: str
    batch: int
    images: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def throughput(self) -> float:
        """Images per second over the timed loop."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        """A latency percentile of one batch, in ms."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict with throughput and p50/p95/p99."""
        return {**asdict(self), "throughput": self.throughput, "p50_ms": self.percentile_ms(50),
                "p95_ms": self.percentile_ms(95), "p99_ms": self.percentile_ms(99)}


def cycle(items: Sequence[Path], count: int) -> list[Path]:
    """``count`` items taken round-robin from ``items``."""
    if not items:
        raise ValueError("no photos to benchmark on")
    return [items[i % len(items)] for i in range(count)]


# --- torch.hub example ------------------------------------------------------------------------


def hub_prepare_input(path: Path, pre: Preprocessing | None = None) -> torch.Tensor:
    """NVIDIA's ``prepare_input_from_uri`` for a local file: a (1, 3, 224, 224) float tensor.

    torchvision's ``Resize(256)`` (shorter side to 256, the other ``int(256 * long / short)``, PIL
    bilinear), ``CenterCrop(224)`` (offsets ``int(round((size - 224) / 2))``), ``ToTensor()``
    (uint8 HWC to float CHW / 255), then ``unsqueeze(0).sub_(mean).div_(std)``. The one addition
    is ``convert("RGB")``: the example assumes RGB files, and one sample photo is grayscale.
    """
    import torch
    from PIL import Image

    pre = pre or Preprocessing()
    img = Image.open(path).convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = pre.resize_shorter, int(pre.resize_shorter * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    img = img.resize(size, Image.Resampling.BILINEAR)
    top = round((size[1] - pre.crop) / 2.0)
    left = round((size[0] - pre.crop) / 2.0)
    img = img.crop((left, top, left + pre.crop, top + pre.crop))
    tensor = torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    tensor = tensor.float().div(255)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return tensor.unsqueeze(0).sub_(mean).div_(std)


def hub_example(
    model: torch.nn.Module,
    photos: Sequence[Path],
    *,
    batch: int,
    images: int,
    pre: Preprocessing | None = None,
    warmup: bool = True,
) -> BaselineResult:
    """Time the torch.hub example loop over ``images`` photos (round-robin), ``batch`` at a time.

    Per batch: open and preprocess each photo, ``torch.cat``, the eager model under
    ``torch.no_grad()``, softmax, top-5. The timed span covers everything from the first file open
    to the last top-5; one untimed warm-up batch runs first.
    """
    import torch

    model = model.eval()
    paths = cycle(photos, images)

    def one_batch(chunk: Sequence[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.cat([hub_prepare_input(p, pre) for p in chunk])
        with torch.no_grad():
            output = torch.nn.functional.softmax(model(inputs), dim=1)
        return torch.topk(output, 5, dim=1)

    if warmup:
        one_batch(paths[:batch])
    latencies = []
    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        t0 = time.perf_counter()
        one_batch(paths[i : i + batch])
        latencies.append((time.perf_counter() - t0) * 1000.0)
    seconds = time.perf_counter() - start
    return BaselineResult(name="torch.hub example (eager + PIL)", batch=batch, images=len(paths),
                          seconds=seconds, latencies_ms=latencies)


# --- model only ----------------------------------------------------------------------------------

# The model-only runners are the ones export validation uses (a TorchScript module under
# ``torch.inference_mode()``, an ONNX Runtime CPU session); the sweep builds them by these names.
torchscript_runner = TorchScriptRunner
onnxruntime_runner = OnnxRuntimeRunner


def model_only(
    name: str, runner: Callable[[np.ndarray], object], inputs: np.ndarray, *, batch: int, images: int
) -> BaselineResult:
    """Time ``runner`` on batches cut round-robin from ``inputs`` (preprocessed photos).

    Runs ``ceil(images / batch)`` batches (at least 3) after one untimed warm-up batch.
    """
    if inputs.ndim != 4 or len(inputs) == 0:
        raise ValueError(f"inputs must be a non-empty (N, C, H, W) array, got {inputs.shape}")
    index = [i % len(inputs) for i in range(batch)]
    data = np.ascontiguousarray(inputs[index])  # in its own dtype: an FP16 model takes FP16
    runner(data)
    count = max(3, math.ceil(images / batch))
    latencies = []
    start = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        runner(data)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    seconds = time.perf_counter() - start
    return BaselineResult(name=name, batch=batch, images=count * batch, seconds=seconds, latencies_ms=latencies)
