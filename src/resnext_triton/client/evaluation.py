"""Run an image set through one or more served models and score them (:func:`evaluate_models`).

Every model classifies the same images in the same order; with several models the streams are
read in lockstep, so each image's results from all models are compared as they arrive and memory
stays bounded whatever the size of the set. The first model is the reference for agreement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from resnext_triton.client.classifier import DEFAULT_CONCURRENCY, TritonClassifier
from resnext_triton.client.dataset import Dataset, DatasetError, LabelledImage
from resnext_triton.client.inputs import Source
from resnext_triton.client.metrics import AccuracyMeter, AgreementMeter
from resnext_triton.client.results import ClassificationResult

TOP_K = 5


@dataclass
class ModelEvaluation:
    """One model's figures on an image set: accuracy (labelled sets), agreement, failures."""

    model: str
    url: str
    protocol: str
    dataset: Dataset
    labels: Sequence[str]
    accuracy: AccuracyMeter | None
    agreement: AgreementMeter | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)
    classified: int = 0
    elapsed_s: float = 0.0

    def add(self, image: LabelledImage, result: ClassificationResult) -> None:
        """Count one image's result."""
        if not result.ok:
            self.failed.append((result.input, result.error or "failed"))
            return
        self.classified += 1
        if self.accuracy is not None and image.label is not None:
            self.accuracy.add(image.label, result.predictions)

    def to_dict(self, worst: int = 10) -> dict[str, Any]:
        """Every figure as JSON: model, dataset, counts, failures, top1/top5, worst classes, agreement, timing."""
        acc = self.accuracy
        return {
            "model": self.model,
            "url": self.url,
            "protocol": self.protocol,
            "dataset": {
                "root": str(self.dataset.root),
                "layout": self.dataset.layout,
                "images": len(self.dataset),
                "classes": self.dataset.classes,
            },
            "images": len(self.dataset),
            "classified": self.classified,
            "failed": [{"input": name, "error": error} for name, error in self.failed],
            "top1": acc.top1.to_dict() if acc else None,
            "top5": acc.top5.to_dict() if acc else None,
            "worst_classes": [c.to_dict() for c in acc.worst(worst, self.labels)] if acc else [],
            "agreement": self.agreement.to_dict() if self.agreement else None,
            "elapsed_s": self.elapsed_s,
            "images_per_s": self.classified / self.elapsed_s if self.elapsed_s > 0 else None,
        }


def class_count(classifiers: Sequence[TritonClassifier], labels: Sequence[str]) -> int:
    """The number of classes every model outputs, which the label list must match.

    Raises:
        DatasetError: if the models disagree on it, or it is not the length of the label list.
        ServerUnavailable: if the server is not reachable within a classifier's timeout.
        ModelNotReady: if a model is missing, not ready or not a usable classifier.
    """
    counts = {clf.model_info.name: clf.model_info.num_classes for clf in classifiers}
    known = {n for n in counts.values() if n is not None}
    if len(known) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in counts.items())
        raise DatasetError(f"the models output different numbers of classes: {listed}")
    num_classes = known.pop() if known else len(labels)
    if num_classes != len(labels):
        raise DatasetError(f"the models output {num_classes} classes but the label list has {len(labels)} (--labels)")
    return num_classes


def evaluate_models(
    dataset: Dataset,
    classifiers: Sequence[TritonClassifier],
    *,
    batch_size: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Callable[[int], object] | None = None,
    clock: Callable[[], float] | None = None,
) -> list[ModelEvaluation]:
    """Classify every image of ``dataset`` with each classifier and score the results.

    One model gets top-5 predictions; several get every class's logit (``top_k`` = the number of
    classes), and each model after the first is compared with the first (:class:`.AgreementMeter`)
    on the images both classified. A failing image is recorded in each model's ``failed`` list
    and left out of its accuracy.

    Args:
        dataset: the images and their labels (:func:`.dataset.load_dataset`).
        classifiers: one per model, all using ``classifiers[0].labels``; the first is the reference.
        batch_size: images per request (default: the classifier's).
        concurrency: requests in flight per model.
        progress: called with 1 after each image.
        clock: seconds for timing (default ``time.perf_counter``).

    Raises:
        ValueError: if no classifier is given.
        DatasetError: if the models' class count does not match the label list.
        ServerUnavailable: if the server cannot be reached or is lost during the run.
        ModelNotReady: if a model is missing or unusable.
        ClientError: for a batch size or concurrency a model cannot take.
    """
    if not classifiers:
        raise ValueError("evaluate_models needs at least one classifier")
    clock = clock or time.perf_counter
    labels = classifiers[0].labels
    num_classes = class_count(classifiers, labels)
    top_k = num_classes if len(classifiers) > 1 else min(TOP_K, num_classes)
    reference = classifiers[0].model_info.name
    evaluations = [
        ModelEvaluation(
            model=clf.model_info.name,
            url=clf.url,
            protocol=clf.protocol,
            dataset=dataset,
            labels=labels,
            accuracy=AccuracyMeter() if dataset.labelled else None,
            agreement=AgreementMeter(reference) if i > 0 else None,
        )
        for i, clf in enumerate(classifiers)
    ]
    sources = [Source.file(image.path) for image in dataset.images]
    started = clock()
    with contextlib.ExitStack() as stack:
        streams: list[Iterator[ClassificationResult]] = [
            stack.enter_context(
                _closing(clf.classify_iter(sources, top_k=top_k, batch_size=batch_size, concurrency=concurrency))
            )
            for clf in classifiers
        ]
        for image, results in zip(dataset.images, zip(*streams, strict=True), strict=True):
            _score(image, results, evaluations)
            if progress is not None:
                progress(1)
    elapsed = clock() - started
    for evaluation in evaluations:
        evaluation.elapsed_s = elapsed
    return evaluations


@contextlib.contextmanager
def _closing(stream: Iterator[ClassificationResult]) -> Iterator[Iterator[ClassificationResult]]:
    """Close a result stream (its threads) when the run ends, finished or not."""
    try:
        yield stream
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _score(image: LabelledImage, results: Sequence[ClassificationResult], evaluations: list[ModelEvaluation]) -> None:
    reference = results[0]
    for evaluation, result in zip(evaluations, results, strict=True):
        evaluation.add(image, result)
        if evaluation.agreement is not None and reference.ok and result.ok:
            evaluation.agreement.add(reference.predictions, result.predictions)
