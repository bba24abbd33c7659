"""A CPU stand-in for Triton's native ``pytorch`` (libtorch) backend, as a Python-based backend.

Placed at ``<backend-dir>/pytorch/model.py`` (with ``_resnext_standin.py`` beside it) this file
serves every model whose config says ``backend: "pytorch"``. The shared base reads the config,
checks the requests and batches them; this file only loads the TorchScript module and calls it:
ONE ``torch.jit`` call per batch of requests.

Inputs are passed to the TorchScript module positionally, ordered like the native backend does
(by the ``__N`` suffix of ``INPUT__N``, else in config order); a tuple/list result maps to the
outputs the same way. The input dtype comes from the config (FP16 is allowed, for a TorchScript
model exported in half precision).

This file runs inside Triton's Python stub: it imports nothing from the ``resnext_triton`` package.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
from _resnext_standin import StandinModel

_INDEX = re.compile(r"__(\d+)$")


class TritonPythonModel(StandinModel):
    """Runs a TorchScript module with libtorch on the CPU, one call per batch of requests."""

    runtime = "TorchScript"
    default_filename = "model.pt"

    def import_runtime(self) -> None:
        import torch

        self.torch = torch

    @staticmethod
    def ordered(tensors: list[dict]) -> list[dict]:
        """Tensors in positional order: by the ``__N`` suffix when every name has one, else as configured."""
        indices = [_INDEX.search(t["name"]) for t in tensors]
        if all(indices):
            return [t for _, t in sorted(zip((int(m.group(1)) for m in indices), tensors, strict=True))]
        return list(tensors)

    def load(self, path: str, intra: int, inter: int) -> str:
        torch = self.torch
        torch.set_num_threads(intra)
        # RuntimeError: already set (or parallel work already started) in this process.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(inter)
        self.module = torch.jit.load(path, map_location="cpu")
        self.module.eval()
        return f"torch {torch.__version__}"

    def infer(self, feed: list[np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            result = self.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in feed))
        results = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(results) != len(self.outputs):
            raise RuntimeError(f"the module returned {len(results)} tensor(s), the config names {len(self.outputs)}")
        return [r.detach().cpu().numpy() for r in results]

    def finalize(self) -> None:
        self.module = None
