"""Export the model to every requested format, validate each artifact, publish it atomically."""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from resnext_triton.exporters import ExportError
from resnext_triton.exporters.validate import (
    TOLERANCES,
    Tolerance,
    ValidationReport,
    compare,
    raise_on_failure,
    random_inputs,
)
from resnext_triton.runners import EagerRunner, load_runner
from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.config import ServingOptions
from resnext_triton.triton.repository import publish_version, write_configs
from resnext_triton.weights import LoadedWeights

log = logging.getLogger(__name__)

FORMAT_ORDER = (Format.TORCHSCRIPT, Format.ONNX, Format.ONNX_INT8, Format.TENSORRT, Format.TENSORRT_INT8)


@dataclass(frozen=True)
class ExportRequest:
    """What to export, where, and how to check it."""

    spec: ModelSpec
    formats: tuple[Format, ...]
    out: Path
    options: ServingOptions = field(default_factory=ServingOptions)
    keep: int = 2
    validate: bool = True
    device: str = "cpu"
    torchscript_fp16: bool = False
    channels_last: bool = False
    opset: int = 18
    photos: tuple[Path, ...] = ()
    random_inputs: int = 2
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(TOLERANCES))
    timing_cache: Path | None = None
    calibration_images: tuple[Path, ...] = ()
    """INT8 calibration images (default: the validation photos)."""
    calibration_method: str = "minmax"
    """INT8 activation calibration, for both onnx_int8 and tensorrt_int8."""

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError("no format requested")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        if self.torchscript_fp16 and self.device != "cuda":
            raise ValueError("--torchscript-fp16 targets GPUs: add --device cuda")


@dataclass
class StepResult:
    """The outcome of one format's export."""

    fmt: Format
    seconds: float = 0.0
    artifact: Path | None = None
    report: ValidationReport | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the artifact was exported, validated (unless skipped) and published."""
        return self.error is None

    def line(self) -> str:
        """One summary line: ``onnx  6.4 s  .../1/model.onnx (170.6 MB)  max|diff| 2.1e-06  ...  ok``.

        The figures are the logits'; ``features`` adds the features' (max |diff|, or the SQNR for INT8).
        """
        where = "-"
        if self.artifact is not None and self.artifact.exists():
            size = self.artifact.stat().st_size / 1e6
            rel = f"{self.artifact.parent.parent.name}/{self.artifact.parent.name}/{self.artifact.name}"
            where = f"{rel} ({size:.1f} MB)"
        if self.report is None:
            check = "validation skipped"
        elif "sqnr_db" in self.report.extra:
            extra = self.report.extra
            check = (
                f"SQNR {extra['sqnr_db']:.1f} dB  top-1 {extra['top1_agreed_where_held']}/{extra['top1_held']}"
                " beyond noise"
            )
        else:
            check = f"max|diff| {self.report.max_abs:.1e}  top-1 {self.report.top1_agree}/{self.report.photos}"
        if self.report is not None and self.report.features:
            figures = self.report.features
            if "sqnr_db" in figures:
                check += f"  features SQNR {figures['sqnr_db']:.1f} dB"
            else:
                check += f"  features max|diff| {figures['max_abs_diff']:.1e}"
        status = "ok" if self.ok else f"FAILED: {self.error}"
        return f"{self.fmt.value:<12} {self.seconds:6.1f} s  {where}  {check}  {status}"


def tool_versions() -> dict[str, str]:
    """Versions of the tools that made an artifact."""
    versions = {"python": platform.python_version()}
    for dist in ("resnext-triton", "torch", "onnx", "onnxruntime", "onnxscript", "tensorrt", "tritonclient"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def load_photos(paths: tuple[Path, ...], spec: ModelSpec) -> np.ndarray:
    """Preprocess validation photos with the shared preprocessing (the one the client uses).

    Raises:
        ExportError: if a photo cannot be read.
    """
    from resnext_triton.preprocess import PreprocessError, preprocess_path

    arrays = []
    for path in paths:
        try:
            arrays.append(preprocess_path(path, spec.preprocessing))
        except (PreprocessError, OSError) as exc:
            raise ExportError(f"validation photo {path}: {exc}") from exc
    if not arrays:
        return np.zeros((0, *spec.input_shape), dtype=np.float32)
    return np.stack(arrays).astype(np.float32)


class Exporter:
    """Runs an :class:`ExportRequest` for a model with loaded weights."""

    def __init__(self, request: ExportRequest, weights: LoadedWeights):
        self.request = request
        self.weights = weights
        self.spec = request.spec
        self._photos = load_photos(request.photos, self.spec) if request.validate else None
        self._random = random_inputs(self.spec, request.random_inputs)
        self._reference = EagerRunner(weights.model, request.device)
        self._onnx_path: Path | None = None

    def run(self) -> list[StepResult]:
        """Export every requested format (in dependency order); never raises for one format's failure."""
        results = []
        for fmt in (f for f in FORMAT_ORDER if f in self.request.formats):
            result = StepResult(fmt)
            start = time.perf_counter()
            try:
                version_dir = self._publish(fmt, result)
                result.artifact = version_dir / fmt.filename
                write_configs(self.request.out, self.spec, fmt, self.request.options)
            except (ExportError, ValueError, OSError, RuntimeError) as exc:
                result.error = " ".join(str(exc).split()) or type(exc).__name__
                log.error("%s export failed: %s", fmt.value, exc)
            result.seconds = time.perf_counter() - start
            results.append(result)
            print(result.line(), flush=True)
        return results

    def _publish(self, fmt: Format, result: StepResult) -> Path:
        model_dir = self.request.out / self.spec.model_name(fmt)

        def fill(staging: Path) -> dict[str, Any]:
            artifact = staging / fmt.filename
            details = self._export(fmt, artifact)
            validation: dict[str, Any] = {"skipped": True}
            if self.request.validate:
                result.report = self._validate(fmt, artifact)
                validation = result.report.describe()
                raise_on_failure([result.report])
            return self._manifest(fmt, details, validation)

        return publish_version(model_dir, fill, keep=self.request.keep)

    def _export(self, fmt: Format, artifact: Path) -> dict[str, Any]:
        req = self.request
        log.info("exporting %s -> %s", fmt.value, artifact.name)
        if fmt is Format.TORCHSCRIPT:
            from resnext_triton.exporters.torch2torchscript import export_torchscript

            export_torchscript(
                self.weights.model, self.spec, artifact, device=req.device, fp16=req.torchscript_fp16,
                channels_last=req.channels_last,
            )
            return {"device": req.device, "fp16": req.torchscript_fp16, "channels_last": req.channels_last}
        if fmt is Format.ONNX:
            from resnext_triton.exporters.torch2onnx import export_onnx

            export_onnx(self.weights.model, self.spec, artifact, opset=req.opset)
            self._onnx_path = artifact
            return {"opset": req.opset}
        if fmt is Format.ONNX_INT8:
            with tempfile.TemporaryDirectory() as tmp:
                return {"opset": req.opset, **self._quantize(self._onnx_source(Path(tmp)), artifact, "cpu")}
        from resnext_triton.exporters.onnx2trt import build_engine, require_tensorrt

        require_tensorrt()
        int8 = fmt is Format.TENSORRT_INT8
        details: dict[str, Any] = {"opset": req.opset}
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = self._onnx_source(Path(tmp))
            if int8:  # the plan's input is a symmetric QDQ graph, calibrated like onnx_int8
                qdq = Path(tmp) / "model_qdq.onnx"
                details |= self._quantize(onnx_path, qdq, "tensorrt")
                onnx_path = qdq
            info = build_engine(
                onnx_path, artifact, self.spec, max_batch=req.options.max_batch_size, timing_cache=req.timing_cache,
                int8=int8,
            )
        return {**details, **info.describe()}

    def _quantize(self, onnx_path: Path, out: Path, target: str) -> dict[str, Any]:
        """Quantize the FP32 ONNX model for ``target`` on the calibration images (default: the photos)."""
        from resnext_triton.exporters.onnx2int8 import quantize_onnx

        req = self.request
        calibration = load_photos(req.calibration_images or req.photos, self.spec)
        return quantize_onnx(onnx_path, out, self.spec, calibration, method=req.calibration_method, target=target)

    def _onnx_source(self, tmp: Path) -> Path:
        """The FP32 ONNX model TensorRT builds from and INT8 quantizes: this run's, or a fresh export."""
        if self._onnx_path is not None:
            published = self.request.out / self.spec.model_name(Format.ONNX)
            from resnext_triton.triton.repository import latest_version

            latest = latest_version(published)
            if latest is not None and (latest / Format.ONNX.filename).is_file():
                return latest / Format.ONNX.filename
        from resnext_triton.exporters.torch2onnx import export_onnx

        return export_onnx(self.weights.model, self.spec, tmp / "model.onnx", opset=self.request.opset)

    def _validate(self, fmt: Format, artifact: Path) -> ValidationReport:
        half = fmt is Format.TENSORRT or (fmt is Format.TORCHSCRIPT and self.request.torchscript_fp16)
        precision = "int8" if fmt.is_int8 else "fp16" if half else "fp32"
        assert self._photos is not None
        with closing(load_runner(fmt, artifact, spec=self.spec, device=self.request.device)) as candidate:
            report = compare(
                fmt.value, precision, self._reference, candidate, self._photos, self._random,
                self.request.tolerances[precision],
            )
        log.info("%s validation: max|diff| %.2e, %s", fmt.value, report.max_abs, "ok" if report.ok else "FAILED")
        return report

    def _manifest(self, fmt: Format, details: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.spec.model_name(fmt),
            "format": fmt.value,
            "variant": self.spec.variant,
            "num_classes": self.spec.num_classes,
            "input": {"name": self.spec.input_name, "shape": list(self.spec.input_shape)},
            "output": {"name": self.spec.output_name, "shape": [self.spec.num_classes]},
            "features": {"name": self.spec.features_name, "shape": [self.spec.feature_dim]},
            "preprocessing": self.spec.preprocessing.to_parameters(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "weights": self.weights.describe(),
            "export": details,
            "validation": validation,
            "tools": tool_versions(),
        }
