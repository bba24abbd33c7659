"""A CPU stand-in for Triton's native ``onnxruntime`` backend, as a Python-based backend.

The pip-installed Triton has only the Python backend. Placed at ``<backend-dir>/onnxruntime/model.py``
this file serves every model whose config says ``backend: "onnxruntime"``, so the model directories
stay byte-identical between a GPU host (native backend) and a CPU host (this file).

Each ``execute()`` concatenates all requests the dynamic batcher hands it into ONE ONNX Runtime call
and splits the outputs back per request. A request that does not fit (wrong dtype or shape) gets
its own error response; the others still run.

This file runs inside Triton's Python stub: it imports nothing from the ``resnext_triton`` package.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_FILENAME = "model.onnx"

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
    intra = _parameter(config, "intra_op_thread_count", "INTRA_OP_THREAD_COUNT")
    inter = _parameter(config, "inter_op_thread_count", "INTER_OP_THREAD_COUNT")
    intra_n = int(intra) if intra and int(intra) > 0 else max(1, cpus // _instance_count(config))
    inter_n = int(inter) if inter and int(inter) > 0 else 1
    return intra_n, inter_n


def _dims_ok(shape: tuple[int, ...], dims: list[int], batched: bool) -> bool:
    body = shape[1:] if batched else shape
    if batched and not shape:
        return False
    return len(body) == len(dims) and all(d == -1 or d == s for d, s in zip(dims, body, strict=True))


class TritonPythonModel:
    """Runs an ONNX model with ONNX Runtime on the CPU, one session call per batch of requests."""

    def initialize(self, args: dict) -> None:
        import onnxruntime as ort

        self.config = json.loads(args["model_config"])
        self.name = args.get("model_name", self.config.get("name", "?"))
        self.torch = None
        if NUMPY2:
            try:
                import torch
            except ImportError:
                raise pb_utils.TritonModelException(
                    f"{self.name}: with numpy >= 2 this Triton's Python stub needs torch to hand over output "
                    "tensors (DLPack); install torch, or numpy < 2"
                ) from None
            self.torch = torch
        filename = self.config.get("default_model_filename") or DEFAULT_FILENAME
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.name}: model file not found: {path}")
        self.batched = int(self.config.get("max_batch_size", 0)) > 0
        self.inputs = [
            (t["name"], pb_utils.triton_string_to_numpy(t["data_type"]), [int(d) for d in t.get("dims", [])])
            for t in self.config["input"]
        ]
        self.outputs = [(t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in self.config["output"]]
        intra, inter = thread_counts(self.config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra
        options.inter_op_num_threads = inter
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise pb_utils.TritonModelException(f"{self.name}: cannot load {path}: {exc}") from exc
        session_inputs = {i.name for i in self.session.get_inputs()}
        session_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n, _, _ in self.inputs if n not in session_inputs]
        missing += [n for n, _ in self.outputs if n not in session_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"{self.name}: {path} has no tensor(s) {', '.join(missing)} named in the model config"
            )
        pb_utils.Logger.log_info(
            f"{self.name}: ONNX Runtime {ort.__version__} on CPU, {intra} intra-op thread(s), file {path}"
        )

    def _read(self, request: object) -> dict[str, np.ndarray]:
        arrays = {}
        for name, dtype, dims in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name}")
            array = to_numpy(tensor)
            if array.dtype != dtype:
                raise ValueError(f"input {name} has dtype {array.dtype}, the model expects {np.dtype(dtype)}")
            if not _dims_ok(array.shape, dims, self.batched):
                raise ValueError(f"input {name} has shape {list(array.shape)}, the model expects [-1, *{dims}]")
            arrays[name] = array
        if self.batched and len({a.shape[0] for a in arrays.values()}) > 1:
            raise ValueError("inputs of one request have different batch sizes")
        return arrays

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        good: list[tuple[int, dict[str, np.ndarray]]] = []
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

    def _run(self, items: list[tuple[int, dict[str, np.ndarray]]], requests: list) -> list:
        """One session call for all items; one response per item (all errors if the call fails)."""
        if self.batched:
            feed = {name: np.concatenate([arrays[name] for _, arrays in items]) for name, _, _ in self.inputs}
            sizes = [next(iter(arrays.values())).shape[0] for _, arrays in items]
        else:
            feed, sizes = items[0][1], [0]
        names = [name for name, _ in self.outputs]
        try:
            results = self.session.run(names, feed)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            error = pb_utils.TritonError(f"{self.name}: ONNX Runtime failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in items]
        responses = []
        offsets = np.cumsum([0, *sizes])
        for k, (i, _) in enumerate(items):
            wanted = set(requests[i].requested_output_names() or names)
            tensors = []
            for (name, dtype), result in zip(self.outputs, results, strict=True):
                if name not in wanted:
                    continue
                part = result[offsets[k] : offsets[k + 1]] if self.batched else result
                tensors.append(make_tensor(name, np.ascontiguousarray(part, dtype=dtype), self.torch))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.session = None
