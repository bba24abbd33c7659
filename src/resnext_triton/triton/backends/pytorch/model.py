"""A CPU stand-in for Triton's native ``pytorch`` (libtorch) backend, as a Python-based backend.

The pip-installed Triton has only the Python backend. Placed at ``<backend-dir>/pytorch/model.py``
this file serves every model whose config says ``backend: "pytorch"``, so the model directories
stay byte-identical between a GPU host (native backend) and a CPU host (this file).

Inputs are passed to the TorchScript module positionally, ordered like the native backend does
(by the ``__N`` suffix of ``INPUT__N``, else in config order); a tuple/list result maps to the
outputs the same way. Each ``execute()`` concatenates all requests the dynamic batcher hands it
into ONE ``torch.jit`` call and splits the outputs back per request. The input dtype comes from
the config (FP16 is allowed, for a TorchScript model exported in half precision). A request that
does not fit gets its own error response; the others still run.

This file runs inside Triton's Python stub: it imports nothing from the ``resnext_triton`` package.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_FILENAME = "model.pt"
_INDEX = re.compile(r"__(\d+)$")

# Triton 2.51's Python stub is built with pybind11 < 2.12, whose numpy glue predates numpy 2: with
# numpy >= 2 installed, ``Tensor.as_numpy()`` repeats the first element and ``pb_utils.Tensor(name,
# ndarray)`` sends an empty tensor. DLPack is unaffected: inputs are read with ``np.from_dlpack``
# and outputs handed over as torch tensors (numpy's own DLPack capsules upset that stub too).
NUMPY2 = int(np.__version__.split(".")[0]) >= 2


def to_numpy(tensor: object) -> np.ndarray:
    """An input tensor as a numpy array (a view of Triton's shared memory)."""
    return np.from_dlpack(tensor) if NUMPY2 else tensor.as_numpy()


def make_tensor(name: str, array: np.ndarray, torch: object = None) -> object:
    """An output tensor for Triton (``torch`` is the torch module, needed with numpy >= 2)."""
    if not NUMPY2:
        return pb_utils.Tensor(name, array)
    return pb_utils.Tensor.from_dlpack(name, torch.from_numpy(array))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _instance_count(config: dict) -> int:
    groups = config.get("instance_group") or []
    return max(1, sum(int(group.get("count", 1)) for group in groups)) if groups else 1


def _parameter(config: dict, *names: str) -> str | None:
    params = config.get("parameters") or {}
    for name in names:
        value = params.get(name, {}).get("string_value")
        if value not in (None, ""):
            return value
    return None


def thread_counts(config: dict, cpus: int | None = None) -> tuple[int, int]:
    """(intra-op, inter-op) threads: the config's parameters, else this machine's cores shared among instances."""
    cpus = _cpu_count() if cpus is None else cpus
    intra = _parameter(config, "INTRA_OP_THREAD_COUNT", "intra_op_thread_count")
    inter = _parameter(config, "INTER_OP_THREAD_COUNT", "inter_op_thread_count")
    intra_n = int(intra) if intra and int(intra) > 0 else max(1, cpus // _instance_count(config))
    inter_n = int(inter) if inter and int(inter) > 0 else 1
    return intra_n, inter_n


def _ordered(tensors: list[dict]) -> list[dict]:
    """Tensors in positional order: by the ``__N`` suffix when every name has one, else as configured."""
    indices = [_INDEX.search(t["name"]) for t in tensors]
    if all(indices):
        return [t for _, t in sorted(zip((int(m.group(1)) for m in indices), tensors, strict=True))]
    return list(tensors)


def _dims_ok(shape: tuple[int, ...], dims: list[int], batched: bool) -> bool:
    body = shape[1:] if batched else shape
    if batched and not shape:
        return False
    return len(body) == len(dims) and all(d == -1 or d == s for d, s in zip(dims, body, strict=True))


class TritonPythonModel:
    """Runs a TorchScript module with libtorch on the CPU, one call per batch of requests."""

    def initialize(self, args: dict) -> None:
        import torch

        self.torch = torch
        self.config = json.loads(args["model_config"])
        self.name = args.get("model_name", self.config.get("name", "?"))
        filename = self.config.get("default_model_filename") or DEFAULT_FILENAME
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.name}: model file not found: {path}")
        self.batched = int(self.config.get("max_batch_size", 0)) > 0
        self.inputs = [
            (t["name"], pb_utils.triton_string_to_numpy(t["data_type"]), [int(d) for d in t.get("dims", [])])
            for t in _ordered(self.config["input"])
        ]
        self.outputs = [
            (t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in _ordered(self.config["output"])
        ]
        intra, inter = thread_counts(self.config)
        torch.set_num_threads(intra)
        # RuntimeError: already set (or parallel work already started) in this process.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(inter)
        try:
            self.module = torch.jit.load(path, map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError and friends for a bad file
            raise pb_utils.TritonModelException(f"{self.name}: cannot load {path}: {exc}") from exc
        self.module.eval()
        pb_utils.Logger.log_info(
            f"{self.name}: torch {torch.__version__} on CPU, {intra} intra-op thread(s), file {path}"
        )

    def _read(self, request: object) -> list[np.ndarray]:
        arrays = []
        for name, dtype, dims in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name}")
            array = to_numpy(tensor)
            if array.dtype != dtype:
                raise ValueError(f"input {name} has dtype {array.dtype}, the model expects {np.dtype(dtype)}")
            if not _dims_ok(array.shape, dims, self.batched):
                raise ValueError(f"input {name} has shape {list(array.shape)}, the model expects [-1, *{dims}]")
            arrays.append(array)
        if self.batched and len({a.shape[0] for a in arrays}) > 1:
            raise ValueError("inputs of one request have different batch sizes")
        return arrays

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        good: list[tuple[int, list[np.ndarray]]] = []
        for i, request in enumerate(requests):
            try:
                good.append((i, self._read(request)))
            except ValueError as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}"))
        groups = [good] if self.batched else [[item] for item in good]
        for group in groups:
            if group:
                for (i, _), response in zip(group, self._run(group, requests), strict=True):
                    responses[i] = response
        return responses

    def _run(self, items: list[tuple[int, list[np.ndarray]]], requests: list) -> list:
        """One module call for all items; one response per item (all errors if the call fails)."""
        torch = self.torch
        if self.batched:
            feed = [np.concatenate([arrays[j] for _, arrays in items]) for j in range(len(self.inputs))]
            sizes = [arrays[0].shape[0] for _, arrays in items]
        else:
            feed, sizes = items[0][1], [0]
        try:
            with torch.inference_mode():
                result = self.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in feed))
            results = list(result) if isinstance(result, (tuple, list)) else [result]
            if len(results) != len(self.outputs):
                raise RuntimeError(
                    f"the module returned {len(results)} tensor(s), the config names {len(self.outputs)}"
                )
            results = [r.detach().cpu().numpy() for r in results]
        except Exception as exc:  # TorchScript raises torch.jit.Error, RuntimeError, ...
            error = pb_utils.TritonError(f"{self.name}: TorchScript failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in items]
        names = [name for name, _ in self.outputs]
        offsets = np.cumsum([0, *sizes])
        responses = []
        for k, (i, _) in enumerate(items):
            wanted = set(requests[i].requested_output_names() or names)
            tensors = []
            for (name, dtype), array in zip(self.outputs, results, strict=True):
                if name not in wanted:
                    continue
                part = array[offsets[k] : offsets[k + 1]] if self.batched else array
                tensors.append(make_tensor(name, np.ascontiguousarray(part, dtype=dtype), self.torch))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.module = None
