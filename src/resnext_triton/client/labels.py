"""The class labels of the served model: the client's own list when it is the served one, else the server's.

Every exported model carries its label file (``labels.txt``, the ``label_filename`` of its logits
output) and that file's sha256 in its config parameters (``labels_sha256``). The client compares
the digest with its own list (the spec's, ImageNet's by default): when they match, nothing is
fetched. When they differ (a fine-tuned model with its own classes) the served labels are read
from the server with one request through Triton's classification extension, asking for every
class: Triton answers ``"<value>:<index>:<label>"`` for each. A model without the digest is
trusted when its class count matches the client's list.
"""

from __future__ import annotations

import io
import logging

import numpy as np

from resnext_triton.client.discovery import NUMPY_DTYPES, ModelInfo
from resnext_triton.client.errors import InferenceError
from resnext_triton.client.transport import InferRequest, Transport
from resnext_triton.spec import ModelSpec, labels_digest

logger = logging.getLogger(__name__)


def resolve_labels(info: ModelInfo, spec: ModelSpec, transport: Transport) -> list[str]:
    """The labels to print for the served model (see the module docstring).

    Falls back to the spec's labels, with a warning, if the server cannot give its own.

    Raises:
        ServerUnavailable: if the server cannot be reached.
        ValueError: if the spec's label file does not fit the spec (:meth:`ModelSpec.labels`).
    """
    local = spec.labels()
    if not info.server_labels or not info.num_classes:
        return local
    if info.labels_sha256 == labels_digest(local):
        return local
    if info.labels_sha256 is None and info.num_classes == len(local):
        return local
    try:
        labels = fetch_server_labels(transport, info)
    except InferenceError as exc:
        logger.warning("cannot read the labels of model %s from the server (%s); using the client's", info.name, exc)
        return local
    logger.info("model %s has its own labels (%d classes): read from the server", info.name, len(labels))
    return labels


def fetch_server_labels(transport: Transport, info: ModelInfo) -> list[str]:
    """Read the served model's labels: one request asking the classification extension for every class.

    Raises:
        InferenceError: if the model has no known class count, the request fails, or the answer
            is not one ``"<value>:<index>:<label>"`` entry per class.
        ServerUnavailable: if the server cannot be reached.
    """
    count = info.num_classes
    if not count:
        raise InferenceError(f"model {info.name} does not declare its class count")
    request = InferRequest(
        model=info.name,
        input_name=info.input_name,
        datatype=info.datatype,
        data=_probe_input(info),
        output_name=info.output_name,
        class_count=count,
    )
    with transport.infer_session() as session:
        entries = session.infer(request).reshape(-1)
    labels: list[str | None] = [None] * count
    for entry in entries:
        text = entry.decode("utf-8") if isinstance(entry, bytes) else str(entry)
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= count:
            raise InferenceError(f"unexpected classification entry from model {info.name}: {text!r}")
        labels[int(parts[1])] = parts[2]
    missing = [i for i, label in enumerate(labels) if label is None]
    if missing:
        raise InferenceError(f"model {info.name} answered {count - len(missing)} of {count} labels")
    return [str(label) for label in labels]


def _probe_input(info: ModelInfo) -> np.ndarray:
    """One input the model accepts: a black image (or, for an image pipeline, a tiny encoded PNG)."""
    if info.takes_bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="PNG")
        sample = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
    else:
        sample = np.zeros(info.input_shape, dtype=NUMPY_DTYPES[info.datatype])
    return sample[np.newaxis] if info.batching else sample
