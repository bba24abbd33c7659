"""Check an exported artifact, reloaded from disk, against the eager model.

Both run through :mod:`resnext_triton.runners`. Validation collects every failure (NaN/inf,
max |difference| over the bound, top-k order or top-1 disagreement on real photos) into a report
and only then raises.

Both outputs are checked: the logits, and the pooled features before ``fc`` (the embedding),
which are held to the same bounds (max |difference|, relative difference, INT8 SQNR on the
photos); their smallest cosine similarity to the eager features is recorded beside them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resnext_triton.exporters import ValidationError
from resnext_triton.runners import Outputs, Runner
from resnext_triton.spec import ModelSpec

BatchFn = Callable[[np.ndarray], np.ndarray]
"""Anything that maps a float32 batch to float32 logits (a :class:`~resnext_triton.runners.Runner`
also gives its features, through ``run``)."""


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact must be to the eager FP32 model.

    Every bound holds for the logits and for the features alike.

    Attributes:
        max_abs: bound on max |logit difference| (None: recorded, not enforced).
        max_rel: bound on max |difference| / max |eager logit| (None: not enforced).
        topk_order: the top-k indices on each photo must match in order (0: not checked).
        top1: the top-1 class on each photo must match.
        min_sqnr_db: bound on the SQNR against FP32 on the photos (None: not checked).
        beyond_noise: judge top-1 only on photos whose FP32 margin exceeds the measured noise, and
            record the SQNR (INT8 always; FP16 on request, e.g. for random weights' near-ties).
    """

    max_abs: float | None
    max_rel: float | None
    topk_order: int
    top1: bool = True
    min_sqnr_db: float | None = None
    beyond_noise: bool = False

    def describe(self) -> dict[str, Any]:
        """The manifest entry."""
        return dict(self.__dict__)


# Tolerances are data: FP32 formats tight; FP16 judged by top-1 plus a calibrated relative bound.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-3, max_rel=None, topk_order=5),
    "fp16": Tolerance(max_abs=None, max_rel=5e-2, topk_order=0),
    # INT8: top-1 on near-ties means nothing; judged by SQNR and top-1 beyond the noise (see int8_check)
    "int8": Tolerance(max_abs=None, max_rel=None, topk_order=0, top1=False, min_sqnr_db=20.0, beyond_noise=True),
}
MIN_SQNR_DB = 20.0
"""The default bound on INT8 outputs' signal-to-quantization-noise ratio against FP32 (TOLERANCES["int8"])."""
NOISE_SIGMAS = 3.0
"""A photo's FP32 top-1 margin must exceed this many RMS logit errors for its INT8 top-1 to be held to it."""


@dataclass
class ValidationReport:
    """The figures of one artifact's validation."""

    name: str
    precision: str
    tolerance: Tolerance
    photos: int = 0
    random_inputs: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    top1_agree: int = 0
    topk_identical: int = 0
    features: dict[str, Any] = field(default_factory=dict)
    """The features' figures (max_abs_diff, max_rel_diff, min_cosine, sqnr_db for INT8); empty if not compared."""
    failures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failures

    def describe(self) -> dict[str, Any]:
        """The manifest entry."""
        return {
            "precision": self.precision,
            "tolerance": self.tolerance.describe(),
            "photos": self.photos,
            "random_inputs": self.random_inputs,
            "max_abs_diff": self.max_abs,
            "max_rel_diff": self.max_rel,
            "top1_agree": f"{self.top1_agree}/{self.photos}",
            "topk_identical": f"{self.topk_identical}/{self.photos}",
            "features": self.features or None,
            **self.extra,
            "ok": self.ok,
            "failures": self.failures,
        }


def _outputs(model: Runner | BatchFn, batch: np.ndarray) -> Outputs:
    if isinstance(model, Runner):
        return model.run(batch)
    return Outputs(np.asarray(model(batch)))


def _run_batched(model: Runner | BatchFn, inputs: np.ndarray, batch: int = 4) -> Outputs:
    parts = [_outputs(model, inputs[i : i + batch]) for i in range(0, len(inputs), batch)]
    logits = np.concatenate([p.logits for p in parts]).astype(np.float64)
    if any(p.features is None for p in parts):
        return Outputs(logits)
    return Outputs(logits, np.concatenate([p.features for p in parts if p.features is not None]).astype(np.float64))


def compare(
    name: str,
    precision: str,
    reference: Runner | BatchFn,
    candidate: Runner | BatchFn,
    photos: np.ndarray,
    random_inputs: np.ndarray,
    tolerance: Tolerance | None = None,
) -> ValidationReport:
    """Compare a candidate with the reference on photos and random inputs; never raises.

    The logits always; the features too when the reference gives them (a candidate that does not
    is a failure).
    """
    tol = tolerance or TOLERANCES[precision]
    report = ValidationReport(name=name, precision=precision, tolerance=tol)
    report.photos, report.random_inputs = len(photos), len(random_inputs)
    inputs = np.concatenate([photos, random_inputs]).astype(np.float32)
    reference_out = _run_batched(reference, inputs)
    candidate_out = _run_batched(candidate, inputs)
    if reference_out.features is not None:
        _compare_features(report, reference_out.features, candidate_out.features, len(photos), precision)
    ref, out = reference_out.logits, candidate_out.logits
    if out.shape != ref.shape:
        report.failures.append(f"output shape {out.shape} != eager {ref.shape}")
        return report
    if not np.isfinite(out).all():
        report.failures.append(f"{int((~np.isfinite(out)).sum())} NaN/inf values in the output")
        return report
    diff = np.abs(out - ref)
    report.max_abs = float(diff.max())
    report.max_rel = float(diff.max() / max(np.abs(ref).max(), 1e-12))
    if tol.max_abs is not None and report.max_abs > tol.max_abs:
        report.failures.append(f"max |diff| {report.max_abs:.3g} > {tol.max_abs:g}")
    if tol.max_rel is not None and report.max_rel > tol.max_rel:
        report.failures.append(f"max relative diff {report.max_rel:.3g} > {tol.max_rel:g}")
    k = max(tol.topk_order, 1)
    ref_top = np.argsort(-ref[: len(photos)], axis=1)[:, :k]
    out_top = np.argsort(-out[: len(photos)], axis=1)[:, :k]
    report.top1_agree = int((ref_top[:, 0] == out_top[:, 0]).sum())
    report.topk_identical = int((ref_top == out_top).all(axis=1).sum())
    if tol.top1 and report.top1_agree != len(photos):
        report.failures.append(f"top-1 differs on {len(photos) - report.top1_agree} of {len(photos)} photos")
    if tol.topk_order and report.topk_identical != len(photos):
        report.failures.append(
            f"top-{tol.topk_order} order differs on {len(photos) - report.topk_identical} of {len(photos)} photos"
        )
    if tol.beyond_noise:
        int8_check(report, ref[: len(photos)], out[: len(photos)], tol.min_sqnr_db)
    return report


def _compare_features(
    report: ValidationReport, ref: np.ndarray, out: np.ndarray | None, photos: int, precision: str
) -> None:
    """Hold the features to the report's tolerance; figures into ``report.features``, failures prefixed."""
    tol = report.tolerance
    if out is None:
        report.failures.append("features: the artifact has no features output")
        return
    if out.shape != ref.shape:
        report.failures.append(f"features: shape {out.shape} != eager {ref.shape}")
        return
    if not np.isfinite(out).all():
        report.failures.append(f"features: {int((~np.isfinite(out)).sum())} NaN/inf values")
        return
    diff = np.abs(out - ref)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.sum(ref * out, axis=1) / np.maximum(norms, 1e-30)
    figures: dict[str, Any] = {
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max() / max(np.abs(ref).max(), 1e-12)),
        "min_cosine": float(cosine.min()),
    }
    if tol.max_abs is not None and figures["max_abs_diff"] > tol.max_abs:
        report.failures.append(f"features: max |diff| {figures['max_abs_diff']:.3g} > {tol.max_abs:g}")
    if tol.max_rel is not None and figures["max_rel_diff"] > tol.max_rel:
        report.failures.append(f"features: max relative diff {figures['max_rel_diff']:.3g} > {tol.max_rel:g}")
    if tol.beyond_noise and photos:
        sqnr = sqnr_db(ref[:photos], out[:photos])
        figures["sqnr_db"] = round(sqnr, 2)
        if tol.min_sqnr_db is not None and sqnr < tol.min_sqnr_db:
            report.failures.append(f"features: SQNR {sqnr:.1f} dB < {tol.min_sqnr_db:g} dB")
    report.features = figures


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """The signal-to-quantization-noise ratio of ``out`` against ``ref`` in dB (inf when equal)."""
    noise_power = float(np.mean((out - ref) ** 2))
    signal = float(np.mean(ref**2))
    return math.inf if noise_power == 0 else 10.0 * math.log10(max(signal, 1e-30) / noise_power)


def int8_check(report: ValidationReport, ref: np.ndarray, out: np.ndarray, min_sqnr_db: float | None) -> None:
    """Check INT8 logits on the photos: SQNR >= ``min_sqnr_db``, and top-1 agreement beyond the noise.

    Only photos count: the quantization is calibrated on images, and random inputs lie outside that
    range (they are still checked for NaN/inf). Top-1 must agree on every photo whose FP32 top-1
    margin exceeds the measured noise (NOISE_SIGMAS x the RMS logit error). The figures go into
    ``report.extra`` (the manifest and the summary line), failures into ``report.failures``.
    """
    sqnr = sqnr_db(ref, out)
    noise = NOISE_SIGMAS * math.sqrt(float(np.mean((out - ref) ** 2)))
    top2 = np.sort(ref, axis=1)[:, -2:]
    held = (top2[:, 1] - top2[:, 0]) > noise
    same = np.argmax(ref, axis=1) == np.argmax(out, axis=1)
    report.extra = {
        "sqnr_db": round(sqnr, 2),
        "min_sqnr_db": min_sqnr_db,
        "noise": noise,
        "noise_sigmas": NOISE_SIGMAS,
        "top1_held": int(held.sum()),
        "top1_agreed_where_held": int((same & held).sum()),
        "top1_flipped_within_noise": int((~same & ~held).sum()),
    }
    if min_sqnr_db is not None and sqnr < min_sqnr_db:
        report.failures.append(f"SQNR {sqnr:.1f} dB < {min_sqnr_db:g} dB")
    flipped = int((~same & held).sum())
    if flipped:
        report.failures.append(f"top-1 differs on {flipped} photo(s) whose FP32 margin exceeds the noise {noise:.3g}")


def raise_on_failure(reports: list[ValidationReport]) -> None:
    """Raise one error naming every failed artifact and why.

    Raises:
        ValidationError: if any report failed.
    """
    failed = [r for r in reports if not r.ok]
    if failed:
        lines = [f"{r.name}: {'; '.join(r.failures)}" for r in failed]
        raise ValidationError("validation failed:\n  " + "\n  ".join(lines))


def random_inputs(spec: ModelSpec, count: int = 2, seed: int = 0) -> np.ndarray:
    """Normal-distributed inputs shaped like a batch of preprocessed images."""
    return np.random.default_rng(seed).standard_normal((count, *spec.input_shape)).astype(np.float32)
