"""Accuracy and agreement figures: counts, Wilson score intervals, per-class accuracy, model agreement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from resnext_triton.client.results import Prediction, label_for

CONFIDENCE = 0.95


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``successes / trials``.

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``z`` the two-sided normal
    quantile of ``confidence`` (1.96 for 95 %). Unlike the normal approximation it stays inside
    [0, 1] and is not empty at 0 or n successes.

    Raises:
        ValueError: if ``trials`` < 1, ``successes`` is outside 0..trials, or ``confidence`` is not in (0, 1).
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and {trials}, got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    n, p = trials, successes / trials
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exact bounds, free of rounding at 0 and n
    high = 1.0 if successes == trials else min(1.0, center + half)
    return low, high


@dataclass
class Tally:
    """Hits out of trials, e.g. top-1 correct out of classified images."""

    correct: int = 0
    total: int = 0

    def add(self, hit: bool) -> None:
        """Count one trial."""
        self.correct += hit
        self.total += 1

    @property
    def accuracy(self) -> float | None:
        """``correct / total``; None before any trial."""
        return self.correct / self.total if self.total else None

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """The Wilson score interval (None before any trial)."""
        return wilson_interval(self.correct, self.total, confidence) if self.total else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: correct, total, accuracy, ci95 ([low, high] or null)."""
        ci = self.interval()
        return {
            "correct": self.correct,
            "total": self.total,
            "accuracy": self.accuracy,
            "ci95": list(ci) if ci else None,
        }


@dataclass(frozen=True)
class ClassAccuracy:
    """One class's top-1 accuracy."""

    class_id: int
    label: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        """``correct / total``."""
        return self.correct / self.total

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: class_id, label, correct, total, accuracy."""
        return {
            "class_id": self.class_id,
            "label": self.label,
            "correct": self.correct,
            "total": self.total,
            "accuracy": self.accuracy,
        }


@dataclass
class AccuracyMeter:
    """Top-1 and top-5 accuracy over labelled images, overall and per class."""

    top1: Tally = field(default_factory=Tally)
    top5: Tally = field(default_factory=Tally)
    per_class: dict[int, Tally] = field(default_factory=dict)

    def add(self, label: int, predictions: Sequence[Prediction]) -> None:
        """Score one image's predictions (best first) against its class."""
        ranked = [p.class_id for p in predictions]
        hit = bool(ranked) and ranked[0] == label
        self.top1.add(hit)
        self.top5.add(label in ranked[:5])
        self.per_class.setdefault(label, Tally()).add(hit)

    def worst(self, n: int, labels: Sequence[str]) -> list[ClassAccuracy]:
        """The ``n`` classes with the lowest top-1 accuracy (ties: more images first, then class index)."""
        classes = [ClassAccuracy(c, label_for(labels, c), t.correct, t.total) for c, t in self.per_class.items()]
        classes.sort(key=lambda c: (c.accuracy, -c.total, c.class_id))
        return classes[:n]


@dataclass
class AgreementMeter:
    """How far a model's outputs are from a reference model's on the same images."""

    reference: str
    top1: Tally = field(default_factory=Tally)
    top5_overlap_sum: float = 0.0
    max_abs_logit_diff: float = 0.0

    def add(self, reference: Sequence[Prediction], other: Sequence[Prediction]) -> None:
        """Compare one image's full predictions (every class, best first) from both models."""
        self.top1.add(reference[0].class_id == other[0].class_id)
        ref5 = {p.class_id for p in reference[:5]}
        self.top5_overlap_sum += len(ref5 & {p.class_id for p in other[:5]}) / max(1, len(ref5))
        diff = np.abs(logit_vector(reference) - logit_vector(other))
        self.max_abs_logit_diff = max(self.max_abs_logit_diff, float(diff.max()) if diff.size else 0.0)

    @property
    def top5_overlap(self) -> float | None:
        """The mean share of the reference's top-5 classes that are in this model's top-5."""
        return self.top5_overlap_sum / self.top1.total if self.top1.total else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: reference, images, top1_agreement, its ci95, top5_overlap, max_abs_logit_diff."""
        ci = self.top1.interval()
        return {
            "reference": self.reference,
            "images": self.top1.total,
            "top1_agreement": self.top1.accuracy,
            "top1_agreement_ci95": list(ci) if ci else None,
            "top5_overlap": self.top5_overlap,
            "max_abs_logit_diff": self.max_abs_logit_diff if self.top1.total else None,
        }


def logit_vector(predictions: Sequence[Prediction]) -> np.ndarray:
    """The full logit vector of predictions that cover every class (classified with top_k = classes).

    Raises:
        ValueError: if the predictions do not cover classes 0..n-1 exactly once.
    """
    vector = np.full(len(predictions), np.nan)
    for p in predictions:
        if not 0 <= p.class_id < len(predictions) or not np.isnan(vector[p.class_id]):
            raise ValueError("the predictions do not cover every class exactly once")
        vector[p.class_id] = p.logit
    return vector
