"""ONNX (FP32) → ONNX INT8: ONNX Runtime static quantization, QDQ format, per-channel weights.

The quantized graph keeps the FP32 model's tensor names and dynamic batch axis, so the same
Triton config shape serves it: ONNX Runtime runs it on CPU (Triton's native onnxruntime backend in
the NGC image, the stand-in locally), and TensorRT builds an INT8 plan from the same QDQ graph on a
GPU (explicit quantization). Activations are calibrated on real images (``calibration``).

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


def quantize_onnx(
    fp32_path: Path,
    out_path: Path,
    spec: ModelSpec,
    calibration: np.ndarray,
    *,
    method: str = "minmax",
    batch: int = 8,
) -> dict[str, Any]:
    """Quantize an FP32 ONNX model to INT8 (QDQ, per-channel weights, U8 activations / S8 weights).

    Args:
        fp32_path: the exported FP32 model.
        out_path: where the INT8 model is written.
        spec: the model's spec (its input name).
        calibration: preprocessed calibration images, float32 (N, C, H, W), N >= 1.
        method: activation calibration: ``minmax``, ``entropy`` or ``percentile``.
        batch: calibration batch size.

    Returns:
        What the manifest records about the quantization.

    Raises:
        ExportError: on an unknown method, no calibration images, or a failing quantizer.
    """
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ExportError("INT8 quantization needs at least one calibration image")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = (
                calibration[i : i + batch] for i in range(0, len(calibration), batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._batches, None)
            return None if chunk is None else {spec.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                prepared,
                out_path,
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        except Exception as exc:  # the quantizer raises assorted types
            raise ExportError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
    log.info("quantized %s -> %s (%s calibration on %d images)", fp32_path.name, out_path.name, method,
             len(calibration))
    return {"quantization": "static QDQ, per-channel S8 weights, U8 activations", "calibration_method": method,
            "calibration_images": len(calibration)}
