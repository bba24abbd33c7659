"""ONNX -> TensorRT engine (FP16, or INT8 from a QDQ graph), saved as the raw plan Triton loads.

A plan is only loadable by the TensorRT version and GPU compute capability that built it, so the
supported route is to build it inside NVIDIA's PyTorch container of the same release as the
Triton image (``export/Dockerfile``, the ``export`` service of docker-compose.yml). Without
TensorRT or a GPU this module raises :class:`TensorRTUnavailable`; it never falls back to FP32.
It only converts: :class:`resnext_triton.runners.TensorRTRunner` runs a plan.

An INT8 plan is built from a symmetric QDQ graph (:func:`resnext_triton.exporters.onnx2int8.quantize_onnx`
with ``target="tensorrt"``): explicit quantization, so TensorRT runs INT8 exactly where the graph's
Q/DQ pairs say, and FP16 elsewhere; no TensorRT calibrator is involved.

The plan keeps the ONNX model's tensor names: ``INPUT__0`` in, ``OUTPUT__0`` (logits) and
``FEATURES__1`` (the pooled features before ``fc``) out, both float32 at the interface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnext_triton.exporters import ExportError, TensorRTUnavailable
from resnext_triton.spec import ModelSpec

log = logging.getLogger(__name__)

ROUTE = (
    "build the TensorRT plan inside NVIDIA's container of the same release as the Triton image: "
    "`docker compose run --rm export` (export/Dockerfile), so the plan's TensorRT matches the server's"
)


@dataclass(frozen=True)
class EngineInfo:
    """What the manifest records about a built plan."""

    tensorrt_version: str
    compute_capability: str
    gpu_name: str
    min_batch: int
    opt_batch: int
    max_batch: int
    fp16: bool
    int8: bool = False

    def describe(self) -> dict[str, Any]:
        """The manifest entry."""
        return dict(self.__dict__)


def tensorrt_available() -> bool:
    """True when the real TensorRT Python module imports (not only its type stubs)."""
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


def require_tensorrt() -> None:
    """Check that TensorRT imports and a CUDA GPU is visible.

    Raises:
        TensorRTUnavailable: naming the supported route when either is missing.
    """
    if not tensorrt_available():
        raise TensorRTUnavailable(f"TensorRT is not installed on this host; {ROUTE}")
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable(f"TensorRT needs an NVIDIA GPU and none is visible; {ROUTE}")


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    spec: ModelSpec,
    *,
    max_batch: int,
    opt_batch: int | None = None,
    workspace_bytes: int = 4 << 30,
    timing_cache: Path | None = None,
    int8: bool = False,
) -> EngineInfo:
    """Build an FP16 (with ``int8``: INT8) engine with one profile (min 1, opt, max = ``max_batch``).

    With ``int8``, ``onnx_path`` must be a QDQ graph: INT8 runs where its Q/DQ pairs say, FP16
    elsewhere (explicit quantization).

    Args:
        onnx_path: the ONNX model (dynamic batch axis); a symmetric QDQ graph for ``int8``.
        plan_path: where to write the raw serialized engine (no header).
        spec: tensor names and shapes.
        max_batch: the profile's maximum batch, at least the Triton config's max_batch_size.
        opt_batch: the batch TensorRT tunes for (default: half of ``max_batch``).
        workspace_bytes: the builder's workspace limit.
        timing_cache: a timing cache file, read if present and written back.
        int8: build an INT8 plan from the graph's Q/DQ pairs.

    Raises:
        TensorRTUnavailable: without TensorRT or a GPU.
        ExportError: if parsing or building fails, the ONNX model lacks the spec's outputs, or
            ``int8`` is asked of a graph without Q/DQ layers.
    """
    require_tensorrt()
    import tensorrt as trt
    import torch

    opt = opt_batch or max(1, max_batch // 2)
    if not 1 <= opt <= max_batch:
        raise ExportError(f"opt batch {opt} is outside 1..{max_batch}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if outputs != [spec.output_name, spec.features_name]:
        raise ExportError(
            f"{onnx_path} has outputs {outputs}, expected {[spec.output_name, spec.features_name]} "
            "(export it again with this version)"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        quantize = trt.LayerType.QUANTIZE
        if not any(network.get_layer(i).type == quantize for i in range(network.num_layers)):
            raise ExportError(f"{onnx_path} has no QuantizeLinear layers: an INT8 plan needs a QDQ graph")
        config.set_flag(trt.BuilderFlag.INT8)  # a weakly typed network: Q/DQ decide where INT8 runs
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ExportError(
            f"TensorRT refused the timing cache {timing_cache} (made by another TensorRT version or GPU?): "
            "delete it or pass another --timing-cache"
        )
    profile = builder.create_optimization_profile()
    shape = spec.input_shape
    dims = [trt.Dims([batch, *shape]) for batch in (1, opt, max_batch)]
    profile.set_shape(spec.input_name, *dims)
    config.add_optimization_profile(profile)
    log.info("building TensorRT %s engine (batch 1..%d, opt %d); this takes minutes", "INT8" if int8 else "FP16",
             max_batch, opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine (see the TensorRT log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    major, minor = torch.cuda.get_device_capability()
    return EngineInfo(
        tensorrt_version=str(trt.__version__),
        compute_capability=f"{major}.{minor}",
        gpu_name=torch.cuda.get_device_name(),
        min_batch=1,
        opt_batch=opt,
        max_batch=max_batch,
        fp16=True,
        int8=int8,
    )

