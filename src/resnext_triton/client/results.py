"""Per-input results: top-k predictions from logits or from Triton's classification extension."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resnext_triton.client.errors import InferenceError


@dataclass(frozen=True)
class Prediction:
    """One of an input's top-k classes.

    Attributes:
        rank: 1 for the most likely class.
        class_id: the output index (0..num_classes-1).
        label: the class label, e.g. ``"n01440764 tench, Tinca tinca"``.
        probability: softmax probability (float64 softmax over all logits); ``None`` when the
            server computed the top-k (``server_topk``), which returns logits only.
        logit: the model's raw output for the class.
    """

    rank: int
    class_id: int
    label: str
    probability: float | None
    logit: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: rank, class_id, label, probability, logit."""
        return {
            "rank": self.rank,
            "class_id": self.class_id,
            "label": self.label,
            "probability": self.probability,
            "logit": self.logit,
        }


@dataclass(frozen=True)
class ClassificationResult:
    """The outcome for one input: its predictions, or the error that stopped it."""

    input: str
    predictions: tuple[Prediction, ...] = field(default=())
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the input was classified."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"input", "predictions": [...], "error"}``."""
        return {"input": self.input, "predictions": [p.to_dict() for p in self.predictions], "error": self.error}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def label_for(labels: Sequence[str], class_id: int) -> str:
    """The label of a class, or ``"class <id>"`` when the label list does not cover it."""
    return labels[class_id] if 0 <= class_id < len(labels) else f"class {class_id}"


def top_k_from_logits(logits: np.ndarray, labels: Sequence[str], k: int) -> tuple[Prediction, ...]:
    """The k most likely classes of one logit vector (ties go to the lower class index)."""
    row = np.asarray(logits, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(row)):
        raise InferenceError("the model returned non-finite logits (NaN or inf)")
    probs = softmax(row)
    order = np.argsort(-probs, kind="stable")[: min(k, row.size)]
    return tuple(
        Prediction(
            rank=rank,
            class_id=int(i),
            label=label_for(labels, int(i)),
            probability=float(probs[i]),
            logit=float(row[i]),
        )
        for rank, i in enumerate(order, start=1)
    )


def parse_classification(entries: Sequence[bytes | str], labels: Sequence[str]) -> tuple[Prediction, ...]:
    """Parse Triton classification-extension strings ``"<value>:<index>[:<label>]"`` of one input.

    The value is the model's output (a logit) for that class: Triton does not apply softmax, and
    a softmax over only k of the classes would not be a probability, so ``probability`` is None.
    A label missing from the string (no ``label_filename`` in the model config) is taken from
    ``labels``.

    Raises:
        InferenceError: if an entry is malformed.
    """
    predictions = []
    for rank, entry in enumerate(entries, start=1):
        text = entry.decode("utf-8", "replace") if isinstance(entry, bytes) else str(entry)
        parts = text.split(":", 2)
        try:
            value, class_id = float(parts[0]), int(parts[1])
        except (IndexError, ValueError) as exc:
            raise InferenceError(f"malformed classification entry {text!r} from the server") from exc
        label = parts[2] if len(parts) == 3 and parts[2] else label_for(labels, class_id)
        predictions.append(Prediction(rank=rank, class_id=class_id, label=label, probability=None, logit=value))
    return tuple(predictions)
