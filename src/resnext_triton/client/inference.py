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

    Only the logits (``info.output_name``) are asked for: the features output stays on the server.

    Raises:
        ServerUnavailable: if the server cannot be reached.
    """
    class_count = top_k if server_topk else 0
    rows, failure = send_batch(session, batch, info, output_name=info.output_name, class_count=class_count)
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


def send_batch(
    session: InferSession, batch: Batch, info: ModelInfo, *, output_name: str, class_count: int = 0
) -> tuple[list[Any], str | None]:
    """Send one batch's arrays in one request that asks for ``output_name`` alone.

    Triton returns only the outputs a request names, so the other outputs never travel.

    Returns:
        (one output row per array of the batch, None) or ([], the failure shared by every array).

    Raises:
        ServerUnavailable: if the server cannot be reached.
    """
    arrays = batch.arrays
    if not arrays:
        return [], None
    request = InferRequest(
        model=info.name,
        input_name=info.input_name,
        datatype=info.datatype,
        data=np.stack(arrays) if info.batching else arrays[0],
        output_name=output_name,
        class_count=class_count,
    )
    try:
        output = session.infer(request)
        return list(output.reshape(len(arrays), -1)), None
    except InferenceError as exc:
        return [], str(exc)
    except ValueError as exc:
        return [], f"unexpected output shape from the server: {exc}"


def _result(name: str, row: np.ndarray, top_k: int, server_topk: bool, labels: Sequence[str]) -> ClassificationResult:
    try:
        predictions = parse_classification(list(row), labels) if server_topk else top_k_from_logits(row, labels, top_k)
    except InferenceError as exc:
        return ClassificationResult(name, error=str(exc))
    return ClassificationResult(name, predictions=predictions)
