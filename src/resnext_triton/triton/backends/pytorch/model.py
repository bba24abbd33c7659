"""A stand-in for Triton's native ``pytorch`` (libtorch) backend, as a Python-based backend.

Placed at ``<backend-dir>/pytorch/model.py`` (with ``_resnext_standin.py`` beside it) this file
serves every model whose config says ``backend: "pytorch"``. The shared base reads the config,
checks the requests and batches them; this file only loads the TorchScript module and calls it:
ONE ``torch.jit`` call per batch of requests.

Inputs are passed to the TorchScript module positionally, ordered like the native backend does
(by the ``__N`` suffix of ``INPUT__N``, else in config order); a tuple/list result maps to the
outputs the same way. The input dtype comes from the config (FP16 is allowed, for a TorchScript
model exported in half precision).

On the CPU (KIND_CPU, the local Triton of a CPU-only host) tensors are numpy arrays, as before.
A KIND_GPU instance serves the way the native backend does:

* the module is loaded onto ``cuda:<model_instance_device_id>``, one stub process per instance,
  each with the batches the dynamic batcher forms for it;
* requests are read through DLPack without a copy: tensors Triton hands over on the GPU (with the
  Python backend's ``FORCE_CPU_ONLY_INPUT_TENSORS: "no"``) stay there and are concatenated on the
  device; tensors in host memory are concatenated into a pinned buffer and copied to the GPU once;
* an FP16 model gets its 4-D inputs in channels_last, the layout it was traced in
  (``export/export.py --torchscript-fp16 --channels-last``);
* the outputs are copied back to the host once per batch (which also waits for the GPU) and
  handed to Triton through DLPack.

CUDA graphs and ``torch.compile`` are not used: whether they help here has not been measured.

This file runs inside Triton's Python stub: it imports nothing from the ``resnext_triton`` package.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import triton_python_backend_utils as pb_utils
from _resnext_standin import StandinModel

_INDEX = re.compile(r"__(\d+)$")


class TritonPythonModel(StandinModel):
    """Runs a TorchScript module with libtorch, one call per batch of requests, on the CPU or a GPU."""

    runtime = "TorchScript"
    default_filename = "model.pt"
    gpu_capable = True
    gpu_device_type = "cuda"  # the device type of a KIND_GPU instance (tests run the GPU path on "cpu")

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
        if not self.on_gpu:
            self.module = torch.jit.load(path, map_location="cpu")
            self.module.eval()
            return f"torch {torch.__version__}"
        if self.gpu_device_type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"a KIND_GPU instance, but torch {torch.__version__} sees no CUDA device")
            torch.cuda.set_device(self.device_id)
        self.device = torch.device(self.gpu_device_type, self.device_id)
        self.module = torch.jit.load(path, map_location=self.device)
        self.module.eval()
        self.half = bool(self.inputs) and all(np.dtype(dtype) == np.float16 for _, dtype, _ in self.inputs)
        self._staging: dict[tuple, object] = {}
        self._copied = torch.cuda.Event() if self.device.type == "cuda" else None
        return f"torch {torch.__version__}" + (", FP16 channels_last" if self.half else "")

    # --- the GPU path: torch tensors throughout (the CPU path keeps the base's numpy hooks) ---

    def to_array(self, tensor: object) -> object:
        if not self.on_gpu:
            return super().to_array(tensor)
        return self.torch.from_dlpack(tensor)  # on the GPU or in host memory, as Triton hands it over

    def dtype_of(self, array: object) -> np.dtype:
        if not self.on_gpu:
            return super().dtype_of(array)
        try:
            return np.dtype(str(array.dtype).removeprefix("torch."))
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            return np.dtype(object)

    def concatenate(self, arrays: list) -> object:
        if not self.on_gpu:
            return super().concatenate(arrays)
        torch = self.torch
        if any(a.device.type != "cpu" for a in arrays):
            return torch.cat([a.to(self.device, non_blocking=True) for a in arrays])
        rows = sum(int(a.shape[0]) for a in arrays)
        stage = self._stage(tuple(arrays[0].shape[1:]), arrays[0].dtype, rows)
        torch.cat(arrays, out=stage)
        batch = stage.to(self.device, non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        return batch

    def _stage(self, sample: tuple, dtype: object, rows: int) -> object:
        """A host buffer of ``rows`` samples (pinned for CUDA), reused once the last copy from it is done."""
        if self._copied is not None:
            self._copied.synchronize()
        key = (sample, dtype)
        buffer = self._staging.get(key)
        if buffer is None or buffer.shape[0] < rows:
            capacity = max(rows, int(self.config.get("max_batch_size", 0)))
            buffer = self.torch.empty((capacity, *sample), dtype=dtype, pin_memory=self.device.type == "cuda")
            self._staging[key] = buffer
        return buffer[:rows]

    def _on_device(self, array: object) -> object:
        x = array if isinstance(array, self.torch.Tensor) else self.torch.from_numpy(np.ascontiguousarray(array))
        x = x.to(self.device, non_blocking=True)
        if self.half and x.dim() == 4:
            x = x.contiguous(memory_format=self.torch.channels_last)
        return x

    def output_tensor(self, name: str, array: object, dtype: type) -> object:
        if not self.on_gpu:
            return super().output_tensor(name, array, dtype)
        if self.dtype_of(array) != np.dtype(dtype):
            array = array.to(self.torch.from_numpy(np.empty(0, dtype=dtype)).dtype)
        return pb_utils.Tensor.from_dlpack(name, array.contiguous())

    def infer(self, feed: list) -> list:
        torch = self.torch
        with torch.inference_mode():
            if self.on_gpu:
                result = self.module(*(self._on_device(a) for a in feed))
            else:
                result = self.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in feed))
        results = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(results) != len(self.outputs):
            raise RuntimeError(f"the module returned {len(results)} tensor(s), the config names {len(self.outputs)}")
        if self.on_gpu:
            return [r.detach().cpu() for r in results]  # one copy per output per batch; waits for the GPU
        return [r.detach().cpu().numpy() for r in results]

    def finalize(self) -> None:
        self.module = None
