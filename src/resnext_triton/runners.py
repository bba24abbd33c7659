"""One family of runners: a model, loaded once, called on float32 batches, returning float32 logits.

Export validation (:mod:`resnext_triton.exporters.validate`) compares every runner with the eager
one; the bench baselines (:mod:`resnext_triton.bench.baselines`) time them. Each runner maps an
``(N, C, H, W)`` float32 numpy batch to ``(N, num_classes)`` float32 logits (``runner(batch)``),
or to both outputs, the logits and the ``(N, feature width)`` features before ``fc``
(``runner.run(batch)``, an :class:`Outputs`). Both cost the same: the model computes the features
on the way to the logits.

* :class:`EagerRunner` -- an ``nn.Module`` in FP32, the reference.
* :class:`TorchScriptRunner` -- ``torch.jit.load``, run in the dtype it was traced with.
* :class:`OnnxRuntimeRunner` -- an ONNX Runtime session (CUDA provider first on ``cuda``).
* :class:`TensorRTRunner` -- a deserialized plan executed on the GPU, torch tensors as buffers.

:func:`load_runner` picks the runner for an artifact by its :class:`~resnext_triton.spec.Format`.
torch, onnxruntime and tensorrt are imported inside the runners, so importing this module is cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from resnext_triton.spec import Format, ModelSpec

if TYPE_CHECKING:
    import tensorrt
    from torch import nn


class Outputs(NamedTuple):
    """What a model returns for a batch: float32 logits, and the features (None: the artifact has none)."""

    logits: np.ndarray
    features: np.ndarray | None = None


class Runner(ABC):
    """A loaded model called on numpy batches (``contextlib.closing`` closes it after use).

    Attributes:
        name: what runs (the format, or ``eager``).
        device: ``cpu`` or ``cuda``.
    """

    name: str = "runner"

    def __init__(self, device: str = "cpu"):
        self.device = device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run one ``(N, C, H, W)`` float32 batch and return ``(N, num_classes)`` float32 logits."""
        return self.run(batch).logits

    @abstractmethod
    def run(self, batch: np.ndarray) -> Outputs:
        """Run one ``(N, C, H, W)`` float32 batch and return its logits and features (float32)."""

    @abstractmethod
    def close(self) -> None:
        """Release the loaded model (the runner must not be called afterwards)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r})"


class _TorchRunner(Runner):
    """Runs a torch module (eager or TorchScript) on one device, inputs cast to one dtype.

    On CUDA, convolutions run without TF32 (PyTorch lets cuDNN use it by default): an FP32 run is
    then FP32, as a reference must be. Measured on an H100 (random-weight ResNeXt101): with TF32 the
    eager model and its own FP32 TorchScript differed by 0.2 in the logits; without it by 2.8e-4.
    """

    def __init__(self, module: Any, device: str, dtype: Any = None):
        super().__init__(device)
        self._module: Any = module
        self._dtype = dtype

    def run(self, batch: np.ndarray) -> Outputs:
        """Run one batch under ``torch.inference_mode()``; the outputs come back as float32 numpy.

        A module returning a tuple gives ``(logits, features)``; one returning a tensor, the logits.
        """
        import torch

        cudnn = torch.backends.cudnn
        with torch.inference_mode(), cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                                                 deterministic=cudnn.deterministic, allow_tf32=False):
            x = torch.from_numpy(batch).to(device=self.device, dtype=self._dtype)
            result = self._module(x)
            parts = list(result) if isinstance(result, tuple | list) else [result]
            arrays = [p.float().cpu().numpy() for p in parts[:2]]
        return Outputs(*arrays)

    def close(self) -> None:
        """Drop the module."""
        self._module = None


class EagerRunner(_TorchRunner):
    """The eager model in FP32, the reference every artifact is compared with.

    Args:
        model: the ``nn.Module``; it is put in eval mode and moved to ``device``. A network with
            ``features()`` and ``fc`` (:class:`~resnext_triton.model.ResNeXt`) gives both outputs
            (:class:`~resnext_triton.model.WithFeatures`), any other module its own output.
        device: ``cpu`` or ``cuda``.
    """

    name = "eager"

    def __init__(self, model: nn.Module, device: str = "cpu"):
        from resnext_triton.model import WithFeatures

        try:
            module: nn.Module = WithFeatures(model)
        except TypeError:
            module = model
        super().__init__(module.eval().to(device), device)


class TorchScriptRunner(_TorchRunner):
    """A TorchScript file reloaded with ``torch.jit.load``, fed the dtype it was traced with.

    Args:
        path: the ``model.pt`` file.
        device: where to load and run it (``map_location``).
    """

    name = Format.TORCHSCRIPT.value

    def __init__(self, path: Path, device: str = "cpu"):
        import torch

        module = torch.jit.load(str(path), map_location=device).eval()
        dtype = next((p.dtype for p in module.parameters()), None)
        if dtype is None:  # frozen modules hold their weights as constants of the graph, not parameters
            dtype = constant_dtype(module.graph) or torch.float32
        super().__init__(module, device, dtype)


def constant_dtype(graph: Any) -> Any:
    """The dtype of the first floating-point tensor constant of a (frozen) TorchScript graph, or None."""
    for node in graph.nodes():
        if node.kind() == "prim::Constant" and node.output().type().kind() == "TensorType":
            value = node.output().toIValue()
            if value.is_floating_point():
                return value.dtype
    return None


class OnnxRuntimeRunner(Runner):
    """An ONNX model in an ONNX Runtime session.

    Args:
        path: the ``model.onnx`` file.
        device: ``cuda`` puts the CUDA execution provider before the CPU one.
        intra_op_threads: the session's intra-op thread count (0: ONNX Runtime's choice).
    """

    name = Format.ONNX.value

    def __init__(self, path: Path, device: str = "cpu", *, intra_op_threads: int = 0):
        import onnxruntime as ort

        super().__init__(device)
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        self._session: Any = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self._input = self._session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> Outputs:
        """Run one batch; the first output is the logits, the second (if any) the features, as float32."""
        results = self._session.run(None, {self._input: batch})
        return Outputs(*(np.asarray(r, dtype=np.float32) for r in results[:2]))

    def close(self) -> None:
        """Drop the session."""
        self._session = None


class TensorRTRunner(Runner):
    """A serialized TensorRT plan run on the GPU, with torch CUDA tensors as its buffers.

    Args:
        path: the raw ``model.plan``.
        spec: the tensor names (input, logits, features).

    Raises:
        TensorRTUnavailable: without TensorRT or a GPU (naming the supported route).
        ExportError: if the plan does not deserialize (built by another TensorRT version?).
    """

    name = Format.TENSORRT.value

    def __init__(self, path: Path, spec: ModelSpec):
        from resnext_triton.exporters import ExportError
        from resnext_triton.exporters.onnx2trt import require_tensorrt

        require_tensorrt()
        import tensorrt as trt

        super().__init__("cuda")
        self._spec = spec
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine: tensorrt.ICudaEngine | None = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ExportError(f"TensorRT could not deserialize {path} (built by another TensorRT version?)")
        self._engine: tensorrt.ICudaEngine | None = engine
        self._context: tensorrt.IExecutionContext | None = engine.create_execution_context()

    def run(self, batch: np.ndarray) -> Outputs:
        """Run one batch (N, C, H, W float32) and return the float32 logits and features.

        Every output tensor of the engine gets a buffer of the shape the context reports for this
        batch (TensorRT needs an address for each); a plan without the features output returns
        the logits alone.

        Raises:
            ExportError: if the runner is closed, the plan lacks the logits output, or TensorRT
                reports a failed execution.
        """
        import tensorrt as trt
        import torch

        from resnext_triton.exporters import ExportError

        context, engine = self._context, self._engine
        if context is None or engine is None:
            raise ExportError("the TensorRT runner is closed")
        inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
        context.set_input_shape(self._spec.input_name, tuple(inputs.shape))
        context.set_tensor_address(self._spec.input_name, inputs.data_ptr())
        buffers: dict[str, torch.Tensor] = {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                continue
            dtype = torch.float16 if engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
            dims = context.get_tensor_shape(name)
            shape = [int(dims[i]) for i in range(len(dims))]
            buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            context.set_tensor_address(name, buffers[name].data_ptr())
        if self._spec.output_name not in buffers:
            raise ExportError(f"the plan has no output {self._spec.output_name} (outputs: {', '.join(buffers)})")
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed")
        stream.synchronize()
        features = buffers.get(self._spec.features_name)
        return Outputs(
            buffers[self._spec.output_name].float().cpu().numpy(),
            None if features is None else features.float().cpu().numpy(),
        )

    def close(self) -> None:
        """Release the execution context before the engine."""
        self._context = None
        self._engine = None


def load_runner(
    fmt: Format | str,
    path: Path,
    *,
    spec: ModelSpec | None = None,
    device: str = "cpu",
    intra_op_threads: int = 0,
) -> Runner:
    """The runner for an artifact on disk.

    Args:
        fmt: the artifact's format.
        path: the artifact (``model.pt``, ``model.onnx`` or ``model.plan``).
        spec: tensor names and classes; needed by TensorRT (default: the default spec).
        device: ``cpu`` or ``cuda`` (TensorRT always runs on ``cuda``).
        intra_op_threads: ONNX Runtime's intra-op threads (0: its choice); ignored by the others.

    Raises:
        ValueError: for an unknown format.
        TensorRTUnavailable: for a plan, without TensorRT or a GPU.
        ExportError: if a plan does not deserialize.
    """
    fmt = Format(fmt)
    if fmt is Format.TORCHSCRIPT:
        return TorchScriptRunner(path, device)
    if fmt in (Format.ONNX, Format.ONNX_INT8):
        return OnnxRuntimeRunner(path, device, intra_op_threads=intra_op_threads)
    if fmt.is_plan:
        return TensorRTRunner(path, spec or ModelSpec())
    raise ValueError(f"no runner for format {fmt.value!r}")
