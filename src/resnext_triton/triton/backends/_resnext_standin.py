"""The shared base of the stand-ins for Triton's native ``onnxruntime`` and ``pytorch`` backends.

The pip-installed Triton has only the Python backend. Placed at ``<backend-dir>/<name>/model.py``
a stand-in serves every model whose config says ``backend: "<name>"``, so the model directories
stay byte-identical between a GPU host (native backend) and a CPU host (the stand-in). The local
launcher copies this file beside each stand-in's ``model.py``: Triton's Python stub puts that
directory on ``sys.path`` before importing ``model.py``, which imports this file by its name.

:class:`StandinModel` does everything but loading and calling the model: it reads the config
(tensors, dtypes, dims, thread counts), checks each request, concatenates all requests the
dynamic batcher hands ``execute()`` into ONE call of the runtime and splits the outputs back per
request. A request that does not fit (wrong dtype or shape) gets its own error response; the
others still run. A subclass implements :meth:`StandinModel.import_runtime`, :meth:`StandinModel.load`
and :meth:`StandinModel.infer`.

Tensors are numpy arrays by default. A subclass that can run on a GPU (``gpu_capable``) is placed on
``cuda:<model_instance_device_id>`` for a KIND_GPU instance and overrides the four array hooks
(:meth:`StandinModel.to_array`, :meth:`StandinModel.dtype_of`, :meth:`StandinModel.concatenate`,
:meth:`StandinModel.output_tensor`) to keep the batch in its own tensors on the device. A KIND_GPU
instance of a stand-in that cannot use a GPU runs on the CPU, and says so in Triton's log.

This file runs inside Triton's Python stub: it imports nothing from the ``resnext_triton`` package
(numpy and ``triton_python_backend_utils`` only; torch when numpy >= 2, see ``NUMPY2``).
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

# Triton 2.51's Python stub is built with pybind11 < 2.12, whose numpy glue predates numpy 2: with
# numpy >= 2 installed, ``Tensor.as_numpy()`` repeats the first element and ``pb_utils.Tensor(name,
# ndarray)`` sends an empty tensor. DLPack is unaffected: inputs are read with ``np.from_dlpack``
# and outputs handed over as torch tensors (numpy's own DLPack capsules upset that stub too).
NUMPY2 = int(np.__version__.split(".")[0]) >= 2

# The thread-count parameters, each spelling in the order it is looked up: the onnxruntime backend's
# lower-case name first, then the libtorch backend's upper-case one (both backends accept both).
INTRA_OP_PARAMETERS = ("intra_op_thread_count", "INTRA_OP_THREAD_COUNT")
INTER_OP_PARAMETERS = ("inter_op_thread_count", "INTER_OP_THREAD_COUNT")


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


def parameter(config: dict, *names: str) -> str | None:
    """The first non-empty ``string_value`` of the config's ``parameters`` among ``names``."""
    params = config.get("parameters") or {}
    for name in names:
        value = params.get(name, {}).get("string_value")
        if value not in (None, ""):
            return value
    return None


def thread_counts(config: dict, cpus: int | None = None) -> tuple[int, int]:
    """(intra-op, inter-op) threads: the config's parameters, else this machine's cores shared among instances."""
    cpus = _cpu_count() if cpus is None else cpus
    intra = parameter(config, *INTRA_OP_PARAMETERS)
    inter = parameter(config, *INTER_OP_PARAMETERS)
    intra_n = int(intra) if intra and int(intra) > 0 else max(1, cpus // _instance_count(config))
    inter_n = int(inter) if inter and int(inter) > 0 else 1
    return intra_n, inter_n


def dims_ok(shape: tuple[int, ...], dims: list[int], batched: bool) -> bool:
    """True if ``shape`` matches the config's ``dims`` (-1 matches any size; batched: after the batch axis)."""
    body = shape[1:] if batched else shape
    if batched and not shape:
        return False
    return len(body) == len(dims) and all(d == -1 or d == s for d, s in zip(dims, body, strict=True))


class StandinModel:
    """A Python-backend model that runs one runtime call per batch of requests (on the CPU unless ``on_gpu``).

    Subclasses set ``runtime`` (named in error messages) and ``default_filename``, and implement
    :meth:`import_runtime`, :meth:`load` and :meth:`infer`; :meth:`missing_tensors` may check the
    loaded model against the config, and :meth:`ordered` may reorder the config's tensors.
    """

    runtime = "?"
    default_filename = "model"
    gpu_capable = False  # True: a KIND_GPU instance runs on cuda:<device id> (the subclass's hooks)
    torch: object = None  # the torch module, to hand over outputs with numpy >= 2
    on_gpu = False
    device_id = 0

    def initialize(self, args: dict) -> None:
        self.import_runtime()
        self.config = json.loads(args["model_config"])
        self.name = args.get("model_name", self.config.get("name", "?"))
        gpu_instance = str(args.get("model_instance_kind", "CPU")).upper() == "GPU"
        self.on_gpu = gpu_instance and self.gpu_capable
        self.device_id = int(args.get("model_instance_device_id") or 0)
        if NUMPY2 and self.torch is None:
            try:
                import torch
            except ImportError:
                raise pb_utils.TritonModelException(
                    f"{self.name}: with numpy >= 2 this Triton's Python stub needs torch to hand over output "
                    "tensors (DLPack); install torch, or numpy < 2"
                ) from None
            self.torch = torch
        filename = self.config.get("default_model_filename") or self.default_filename
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.name}: model file not found: {path}")
        self.batched = int(self.config.get("max_batch_size", 0)) > 0
        self.inputs = [
            (t["name"], pb_utils.triton_string_to_numpy(t["data_type"]), [int(d) for d in t.get("dims", [])])
            for t in self.ordered(self.config["input"])
        ]
        self.outputs = [
            (t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in self.ordered(self.config["output"])
        ]
        intra, inter = thread_counts(self.config)
        # Errors are raised here, not in the subclass, so that Triton's log shows a one-frame traceback.
        try:
            version = self.load(path, intra, inter)
        except Exception as exc:  # each runtime raises its own exception types for a bad file
            raise pb_utils.TritonModelException(f"{self.name}: cannot load {path}: {exc}") from exc
        missing = self.missing_tensors()
        if missing:
            raise pb_utils.TritonModelException(
                f"{self.name}: {path} has no tensor(s) {', '.join(missing)} named in the model config"
            )
        where = f"cuda:{self.device_id}" if self.on_gpu else "CPU"
        pb_utils.Logger.log_info(f"{self.name}: {version} on {where}, {intra} intra-op thread(s), file {path}")
        if gpu_instance and not self.on_gpu:
            pb_utils.Logger.log_warn(f"{self.name}: a KIND_GPU instance; the {self.runtime} stand-in runs on the CPU")

    def import_runtime(self) -> None:
        """Import the runtime's module (first thing ``initialize`` does; an ImportError is not wrapped)."""

    @staticmethod
    def ordered(tensors: list[dict]) -> list[dict]:
        """The config's tensors in the order :meth:`infer` takes and returns them (default: as configured)."""
        return list(tensors)

    def load(self, path: str, intra: int, inter: int) -> str:
        """Load the model file with ``intra``/``inter`` op threads; return the runtime and its version.

        Whatever it raises becomes "cannot load" in a TritonModelException.
        """
        raise NotImplementedError

    def missing_tensors(self) -> list[str]:
        """Names of the config's tensors that the loaded model lacks (default: none checked)."""
        return []

    def infer(self, feed: list[np.ndarray]) -> list[np.ndarray]:
        """Run the model on the inputs (in ``self.inputs`` order); the outputs in ``self.outputs`` order."""
        raise NotImplementedError

    # Array hooks: numpy on the CPU; a GPU-capable subclass keeps its own tensors on the device.

    def to_array(self, tensor: object) -> np.ndarray:
        """An input tensor as the array :meth:`infer` takes (numpy: a view of Triton's memory)."""
        return to_numpy(tensor)

    def dtype_of(self, array: np.ndarray) -> np.dtype:
        """The numpy dtype of an array from :meth:`to_array` (checked against the config)."""
        return array.dtype

    def concatenate(self, arrays: list[np.ndarray]) -> np.ndarray:
        """The requests' arrays of one input as one batch."""
        return np.concatenate(arrays)

    def output_tensor(self, name: str, array: np.ndarray, dtype: type) -> object:
        """A part of an output of :meth:`infer` as a Triton tensor of the config's ``dtype``."""
        return make_tensor(name, np.ascontiguousarray(array, dtype=dtype), self.torch)

    def _read(self, request: object) -> list[np.ndarray]:
        arrays = []
        for name, dtype, dims in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name}")
            array = self.to_array(tensor)
            if self.dtype_of(array) != dtype:
                raise ValueError(f"input {name} has dtype {self.dtype_of(array)}, the model expects {np.dtype(dtype)}")
            if not dims_ok(array.shape, dims, self.batched):
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
        """One runtime call for all items; one response per item (all errors if the call fails)."""
        if self.batched:
            feed = [self.concatenate([arrays[j] for _, arrays in items]) for j in range(len(self.inputs))]
            sizes = [arrays[0].shape[0] for _, arrays in items]
        else:
            feed, sizes = items[0][1], [0]
        try:
            results = self.infer(feed)
        except Exception as exc:  # each runtime raises its own exception types
            error = pb_utils.TritonError(f"{self.name}: {self.runtime} failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in items]
        names = [name for name, _ in self.outputs]
        offsets = np.cumsum([0, *sizes]).tolist()
        responses = []
        for k, (i, _) in enumerate(items):
            wanted = set(requests[i].requested_output_names() or names)
            tensors = []
            for (name, dtype), array in zip(self.outputs, results, strict=True):
                if name not in wanted:
                    continue
                part = array[offsets[k] : offsets[k + 1]] if self.batched else array
                tensors.append(self.output_tensor(name, part, dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
