"""The per-item work of a classification run: prepare one input, send one batch.

:func:`prepare_input` runs in the decode threads: it loads one input, preprocesses it
(:mod:`resnext_triton.preprocess`) and lays the array out as the model takes it (NCHW or NHWC,
FP32 or FP16). :func:`infer_batch` runs in the request threads: one request for a batch's arrays,
then one :class:`~.results.ClassificationResult` per entry, in order. Neither raises for one
input's failure: it becomes that input's result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from resnext_triton.client.discovery import NUMPY_DTYPES, ModelInfo
from resnext_triton.client.errors import INPUT_ERRORS, InferenceError
from resnext_triton.client.inputs import Source, load_source, load_source_bytes
from resnext_triton.client.pipeline import Batch, Prepared
from resnext_triton.client.results import ClassificationResult, parse_classification, top_k_from_logits
from resnext_triton.client.transport import InferRequest, InferSession
from resnext_triton.preprocess import preprocess_image
from resnext_triton.spec import Preprocessing

logger = logging.getLogger(__name__)


def prepare_input(
    source: Source, info: ModelInfo, preprocessing: Preprocessing, *, max_pixels: int, url_timeout_s: float
) -> Prepared:
    """Decode and preprocess one input into the model's layout and datatype; never raises.

    For an image pipeline (``info.takes_bytes``) the input's encoded file is read and sent as it
    is: the server decodes and preprocesses it.
    """
    try:
        if info.takes_bytes:
            data = load_source_bytes(source, url_timeout_s=url_timeout_s)
            return Prepared(source, array=np.frombuffer(data, dtype=np.uint8))
        img = load_source(source, max_pixels=max_pixels, url_timeout_s=url_timeout_s)
        array = preprocess_image(img, preprocessing)
    except INPUT_ERRORS as exc:
        return Prepared(source, error=str(exc))
    except Exception as exc:  # an unexpected decoder failure is still this input's alone
        logger.debug("unexpected error preparing %s", source.name, exc_info=True)
        return Prepared(source, error=f"cannot process image: {type(exc).__name__}: {exc}")
    if info.layout == "NHWC":
        array = np.ascontiguousarray(array.transpose(1, 2, 0))
    return Prepared(source, array=array.astype(NUMPY_DTYPES[info.datatype], copy=False))


def infer_batch(
    session: InferSession,
    batch: Batch,
    info: ModelInfo,
    *,
    top_k: int,
    server_topk: bool,
    labels: Sequence[str],
) -> list[ClassificationResult]:
    """Send one batch and turn its outputs into one result per entry, in order.

    A failed request becomes the error of every input it carried; inputs that failed to prepare
    keep their own error.

    Raises:
        ServerUnavailable: if the server cannot be reached.
    """
    arrays = batch.arrays
    rows: list[Any] = []
    failure: str | None = None
    if arrays:
        data = np.stack(arrays) if info.batching else arrays[0]
        request = InferRequest(
            model=info.name,
            input_name=info.input_name,
            datatype=info.datatype,
            data=data,
            output_name=info.output_name,
            class_count=top_k if server_topk else 0,
        )
        try:
            output = session.infer(request)
            rows = list(output.reshape(len(arrays), -1))
        except InferenceError as exc:
            failure = str(exc)
        except ValueError as exc:
            failure = f"unexpected output shape from the server: {exc}"
    results = []
    row = iter(rows)
    for entry in batch.entries:
        if entry.array is None:
            results.append(ClassificationResult(entry.source.name, error=entry.error))
        elif failure is not None:
            results.append(ClassificationResult(entry.source.name, error=failure))
        else:
            results.append(_result(entry.source.name, next(row), top_k, server_topk, labels))
    return results


def _result(name: str, row: np.ndarray, top_k: int, server_topk: bool, labels: Sequence[str]) -> ClassificationResult:
    try:
        predictions = parse_classification(list(row), labels) if server_topk else top_k_from_logits(row, labels, top_k)
    except InferenceError as exc:
        return ClassificationResult(name, error=str(exc))
    return ClassificationResult(name, predictions=predictions)
