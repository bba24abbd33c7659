"""ONNX (FP32) → ONNX INT8: ONNX Runtime static quantization, QDQ format, per-channel weights.

The quantized graph keeps the FP32 model's tensor names and dynamic batch axis, so the same
Triton config shape serves it. Activations are calibrated on real images (``calibration``). One
quantizer, two targets (:data:`TARGETS`), because the two runtimes want different integer types:

* ``cpu`` (the ``onnx_int8`` format): U8 activations with a zero point, S8 per-channel weights.
  ONNX Runtime fuses this into its VNNI kernels (QLinearConv); run on CPU by Triton's native
  onnxruntime backend in the NGC image and by the stand-in locally. Signed activations ran no
  faster than FP32 on an AVX-512 VNNI host (``bench/int8_recipes.py``), so the CPU graph keeps U8.
* ``tensorrt`` (the ``tensorrt_int8`` format's input): TensorRT takes only symmetric signed INT8,
  so activations and weights are S8 with zero point 0, FP32 weights carry their own Q/DQ pair,
  and each consumer gets a dedicated Q/DQ pair; :func:`resnext_triton.exporters.onnx2trt.build_engine`
  turns it into an INT8 plan (explicit quantization: TensorRT runs INT8 exactly where the graph says).

INT8 is judged by data beside the format, not by top-1 on near-ties
(:func:`resnext_triton.exporters.validate.int8_check`): the SQNR of the logits against FP32, and
top-1 agreement on every photo whose FP32 top-1 margin clears the measured noise.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from resnext_triton.exporters import ExportError
from resnext_triton.spec import ModelSpec

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
"""``minmax``: the observed range. ``entropy``: the range whose 128-bin quantization of a 2048-bin
histogram loses the least information (KL divergence, TensorRT's classic calibration).
``percentile``: 99.999 % of the values."""
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128
"""The entropy search's histogram. ONNX Runtime's ``quantize_static`` passes its calibrator no bin
counts, and the defaults (128 and 128) leave one candidate threshold, the observed range: the very
scales of ``minmax`` (checked on ONNX Runtime 1.31). So the ranges are computed here, by the
calibrator itself, and handed to ``quantize_static`` as its calibration cache."""
PERCENTILE = 99.999
CALIBRATION_CHUNK = 8
"""Images the calibrator reads per call. It keeps every intermediate output of a call before
reducing them (about 180 MB an image for ResNeXt101 at 224 px), so hundreds of calibration images
are read a chunk at a time: memory stays flat, ranges and histograms merge across calls."""
TARGETS = ("cpu", "tensorrt")


def quantize_onnx(
    fp32_path: Path,
    out_path: Path,
    spec: ModelSpec,
    calibration: np.ndarray,
    *,
    method: str = "minmax",
    batch: int = 8,
    target: str = "cpu",
) -> dict[str, Any]:
    """Quantize an FP32 ONNX model to INT8 (QDQ, per-channel S8 weights; activations per ``target``).

    Args:
        fp32_path: the exported FP32 model.
        out_path: where the INT8 model is written.
        spec: the model's spec (its input name).
        calibration: preprocessed calibration images, float32 (N, C, H, W), N >= 1.
        method: activation calibration: ``minmax``, ``entropy`` or ``percentile``.
        batch: calibration batch size.
        target: ``cpu`` (U8 activations, ONNX Runtime) or ``tensorrt`` (symmetric S8 everywhere).

    Returns:
        What the manifest records about the quantization.

    Raises:
        ExportError: on an unknown method or target, no calibration images, or a failing quantizer.
    """
    if target not in TARGETS:
        raise ExportError(f"unknown INT8 target {target!r}; choose from {', '.join(TARGETS)}")
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ExportError("INT8 quantization needs at least one calibration image")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        create_calibrator,
        quantize_static,
        save_tensors_data,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, images: np.ndarray) -> None:
            self._batches: Iterator[np.ndarray] = (images[i : i + batch] for i in range(0, len(images), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._batches, None)
            return None if chunk is None else {spec.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    tensorrt = target == "tensorrt"
    # the calibrator's own options: quantize_static would pass it none of the bin counts (see ENTROPY_BINS)
    options_by_method: dict[str, dict[str, Any]] = {
        "minmax": {"symmetric": False},
        "entropy": {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS, "symmetric": tensorrt},
        "percentile": {"num_bins": ENTROPY_BINS, "percentile": PERCENTILE, "symmetric": tensorrt},
    }
    calibrator_options = options_by_method[method]
    extra: dict[str, Any] = {}
    if tensorrt:  # TensorRT: symmetric S8 only, and no INT32 bias DequantizeLinear (its parser refuses one)
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
                 "DedicatedQDQPair": True, "QuantizeBias": False}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        ranges = Path(tmp) / "ranges.json"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            calibrator = create_calibrator(
                prepared, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=methods[method], extra_options=calibrator_options,
            )
            # one chunk at a time: the calibrator holds every intermediate output of what one call reads
            for start in range(0, len(calibration), CALIBRATION_CHUNK):
                calibrator.collect_data(Reader(calibration[start : start + CALIBRATION_CHUNK]))
            save_tensors_data(calibrator.compute_data(), ranges)
            del calibrator
            quantize_static(
                prepared,
                out_path,
                None,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                extra_options=extra,
                calibration_cache_path=ranges,
            )
        except Exception as exc:  # the quantizer raises assorted types
            raise ExportError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
    log.info("quantized %s -> %s for %s (%s calibration on %d images)", fp32_path.name, out_path.name, target,
             method, len(calibration))
    activations = "symmetric S8 activations" if tensorrt else "U8 activations"
    return {"quantization": f"static QDQ, per-channel S8 weights, {activations}", "int8_target": target,
            "calibration_method": method, "calibration_images": len(calibration)}
