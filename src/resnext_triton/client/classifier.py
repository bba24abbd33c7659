"""TritonClassifier: classify images with a ResNeXt model served by Triton (gRPC or HTTP).

Example::

    from resnext_triton.client import TritonClassifier

    with TritonClassifier("127.0.0.1:8001", "grpc", timeout_s=10) as clf:
        for result in clf.classify(["cat.jpg", "https://example.org/dog.png"], top_k=5):
            print(result.input, result.error or result.predictions[0].label)

The classifier reads the input name, datatype (FP32/FP16), layout (NCHW/NHWC) and batch limit
from the model's metadata and configuration, decodes and preprocesses images in a thread pool
(:mod:`.preprocess`, the parameters of :class:`resnext_triton.spec.Preprocessing`) while up to
``concurrency`` batches are in flight, and streams results back in input order.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from resnext_triton.client.errors import INPUT_ERRORS, ClientError, InferenceError, ModelNotReady, ServerUnavailable
from resnext_triton.client.inputs import DEFAULT_URL_TIMEOUT_S, Source, load_source
from resnext_triton.client.pipeline import Batch, Prepared, WorkerPool, make_batches, ordered_map
from resnext_triton.client.results import ClassificationResult, parse_classification, top_k_from_logits
from resnext_triton.client.transport import (
    PROTOCOLS,
    InferRequest,
    InferSession,
    Transport,
    default_url,
    make_transport,
    normalize_url,
)
from resnext_triton.preprocess import DEFAULT_MAX_PIXELS, preprocess_image
from resnext_triton.spec import Format, ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 300.0
DEFAULT_BATCH_SIZE = 8
DEFAULT_CONCURRENCY = 2
MODEL_PREFERENCE = (Format.ONNX, Format.TORCHSCRIPT, Format.TENSORRT)
"""The order in which a ready model is picked when none is named (FP32 formats first)."""

_NUMPY_DTYPES = {"FP32": np.float32, "FP16": np.float16}
_LAYOUTS = {"FORMAT_NCHW": "NCHW", "FORMAT_NHWC": "NHWC"}

InputLike = Source | str | os.PathLike[str] | bytes | Image.Image


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know about the served model, read from its metadata and config."""

    name: str
    input_name: str
    datatype: str
    layout: str
    input_shape: tuple[int, int, int]
    max_batch_size: int
    output_name: str
    num_classes: int | None
    server_labels: bool

    @property
    def batching(self) -> bool:
        """Whether requests carry a batch dimension (``max_batch_size > 0``)."""
        return self.max_batch_size > 0


def _pick_model(index: list[dict[str, Any]], spec: ModelSpec) -> str | None:
    """The preferred ready ResNeXt model of a repository index, or None."""
    ready = sorted({str(m.get("name")) for m in index if m.get("state") == "READY"})
    preferred = [spec.model_name(fmt) for fmt in MODEL_PREFERENCE]
    for name in preferred:
        if name in ready:
            return name
    for fmt in MODEL_PREFERENCE:
        for name in ready:
            if "resnext" in name.lower() and name.endswith(fmt.model_suffix):
                return name
    others = [name for name in ready if "resnext" in name.lower()]
    return others[0] if others else None


def _describe_index(index: list[dict[str, Any]]) -> str:
    if not index:
        return "the repository is empty"
    parts = []
    for entry in index:
        state = entry.get("state") or "NOT LOADED"
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        parts.append(f"{entry.get('name')} [{state}{reason}]")
    return "models: " + ", ".join(parts)


class TritonClassifier:
    """An image classifier backed by a ResNeXt model on a Triton Inference Server.

    A context manager; construction does not touch the network. :meth:`wait_until_ready` (called
    by :meth:`classify` when needed) connects, picks the model and reads its metadata.

    Args:
        url: ``host:port`` of the server (a scheme is stripped); default ``127.0.0.1:8001`` for
            gRPC, ``127.0.0.1:8000`` for HTTP.
        protocol: ``"grpc"`` or ``"http"``.
        model: the model name; ``None`` picks a ready ResNeXt model from the repository index
            (ONNX first, then TorchScript, then TensorRT).
        timeout_s: seconds to wait for the server and model to become ready; also the timeout of
            each control call.
        request_timeout_s: seconds allowed for one inference request.
        spec: the model spec (preprocessing and labels); default :class:`ModelSpec()`.
        labels: class labels overriding ``spec.labels()``.
        max_pixels: per-image pixel limit (decompression bombs are refused).
        url_timeout_s: seconds allowed to download one URL input.
        workers: decoding/preprocessing threads (default: CPU count, at most 8).

    Raises:
        ValueError: for an unknown protocol or a non-positive timeout.
        ClientError: if tritonclient cannot create a client for the URL.
    """

    def __init__(
        self,
        url: str | None = None,
        protocol: str = "grpc",
        model: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        spec: ModelSpec | None = None,
        labels: Sequence[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        url_timeout_s: float = DEFAULT_URL_TIMEOUT_S,
        workers: int | None = None,
    ):
        if timeout_s <= 0 or request_timeout_s <= 0 or url_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.url = normalize_url(url, protocol) if url else default_url(protocol)
        self.requested_model = model
        self.timeout_s = timeout_s
        self.spec = spec or ModelSpec()
        self.max_pixels = max_pixels
        self.url_timeout_s = url_timeout_s
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._labels: list[str] | None = list(labels) if labels is not None else None
        self._transport: Transport = make_transport(
            protocol, self.url, timeout_s=timeout_s, request_timeout_s=request_timeout_s
        )
        self._info: ModelInfo | None = None
        self.model_selection = "as requested" if model else "not yet picked"
        """How the model was chosen: as requested, from the repository index, or by probing names."""

    # ----------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> TritonClassifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._transport.close()

    @property
    def model_info(self) -> ModelInfo:
        """The served model's description (connects first if needed).

        Raises:
            ServerUnavailable: if the server is not reachable within ``timeout_s``.
            ModelNotReady: if the model is missing, not ready or not a usable classifier.
        """
        return self._info or self.wait_until_ready()

    @property
    def labels(self) -> list[str]:
        """The class labels (the spec's label file unless given)."""
        if self._labels is None:
            self._labels = self.spec.labels()
        return self._labels

    def wait_until_ready(self, timeout_s: float | None = None) -> ModelInfo:
        """Wait for the server, then pick and inspect the model.

        Only connection failures (and a model still loading) are retried, with backoff, until
        ``timeout_s`` (default: the constructor's) has passed; a missing, failed or unusable
        model raises at once.

        Raises:
            ServerUnavailable: if the server is not live within the timeout.
            ModelNotReady: if the model is missing, not ready or not a usable classifier.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                if not self._transport.server_live():
                    raise ServerUnavailable("the server is not live")
                model = self._resolve_model()
                if model is not None:
                    self._info = self._inspect(model)
                    logger.info("model %s ready at %s (%s)", model, self.url, self.protocol)
                    return self._info
                last: Exception = ModelNotReady("model still loading")
            except ServerUnavailable as exc:
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if isinstance(last, ServerUnavailable):
                    raise ServerUnavailable(
                        f"Triton server at {self.url} ({self.protocol}) is not reachable after {timeout:g} s: {last}"
                    ) from last
                raise ModelNotReady(
                    f"model {self.requested_model} is still loading on {self.url} after {timeout:g} s"
                ) from last
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    def _resolve_model(self) -> str | None:
        """The model to use; None while the requested model is still loading.

        Raises:
            ModelNotReady: if no usable model is there.
        """
        index = self._transport.repository_index() if self.requested_model is None else None
        if self.requested_model is None:
            picked = _pick_model(index, self.spec) if index is not None else self._probe_preferred()
            self.model_selection = (
                "picked from the repository index"
                if index is not None
                else "picked by probing readiness: the index is restricted"
            )
            if picked is None:
                raise ModelNotReady(f"no ready ResNeXt model on Triton at {self.url}; {self._describe_models(index)}")
            return picked
        name = self.requested_model
        if self._transport.model_ready(name):
            return name
        index = self._transport.repository_index()
        states = {str(e.get("state")) for e in index or [] if e.get("name") == name}
        if "LOADING" in states:
            return None
        where = "is not ready" if states or index is None else "is not in the repository"
        raise ModelNotReady(f"model {name!r} {where} on Triton at {self.url}; {self._describe_models(index)}")

    def _probe_preferred(self) -> str | None:
        """The first ready model among the spec's names (when the repository index is restricted)."""
        for fmt in MODEL_PREFERENCE:
            name = self.spec.model_name(fmt)
            if self._transport.model_ready(name):
                return name
        return None

    def _describe_models(self, index: list[dict[str, Any]] | None) -> str:
        if index is not None:
            return _describe_index(index)
        ready = [
            self.spec.model_name(f) for f in MODEL_PREFERENCE if self._transport.model_ready(self.spec.model_name(f))
        ]
        listed = ", ".join(ready) if ready else "none"
        return f"the repository index is restricted on this server; ready ResNeXt models: {listed}"

    def _inspect(self, model: str) -> ModelInfo:
        try:
            meta = self._transport.model_metadata(model)
            config = self._transport.model_config(model)
        except ServerUnavailable:
            raise
        except ClientError as exc:
            raise ModelNotReady(f"cannot read model {model!r}: {exc}") from exc
        return model_info_from(model, meta, config, self.spec)

    # ----------------------------------------------------------------------------- classify

    def classify(
        self,
        inputs: Iterable[InputLike],
        *,
        top_k: int = 5,
        batch_size: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        server_topk: bool = False,
    ) -> list[ClassificationResult]:
        """Classify inputs; one result per input, in order (see :meth:`classify_iter`).

        Raises:
            ServerUnavailable: if the server cannot be reached (or is lost during the run).
            ModelNotReady: if the model is missing or unusable.
            ClientError: for an invalid top_k, batch size or concurrency.
        """
        return list(
            self.classify_iter(
                inputs, top_k=top_k, batch_size=batch_size, concurrency=concurrency, server_topk=server_topk
            )
        )

    def classify_iter(
        self,
        inputs: Iterable[InputLike],
        *,
        top_k: int = 5,
        batch_size: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        server_topk: bool = False,
    ) -> Iterator[ClassificationResult]:
        """Classify a stream of inputs, yielding one result per input in input order.

        Inputs are file paths, http(s) URLs, encoded image bytes, PIL images or
        :class:`~.inputs.Source` objects (see :func:`~.inputs.expand_inputs` for directories and
        globs). A failing input yields a result with ``error`` set; the others go on.

        Args:
            inputs: what to classify (consumed lazily).
            top_k: how many classes per input.
            batch_size: images per request (default: 8, at most the model's max_batch_size;
                1 for a model without batching).
            concurrency: requests in flight.
            server_topk: let Triton's classification extension pick the top-k (``class_count``);
                the predictions then carry logits and no probability.

        Raises:
            ServerUnavailable: if the server cannot be reached (or is lost during the run).
            ModelNotReady: if the model is missing or unusable.
            ClientError: for an invalid top_k, batch size or concurrency.
        """
        info = self.model_info
        size = self.resolve_batch_size(batch_size)
        if top_k < 1 or (info.num_classes is not None and top_k > info.num_classes):
            raise ClientError(f"top_k must be between 1 and the number of classes, got {top_k}")
        if concurrency < 1:
            raise ClientError(f"concurrency must be >= 1, got {concurrency}")
        labels = self.labels
        if info.num_classes is not None and info.num_classes != len(labels):
            logger.warning(
                "the model has %d classes but the label list %d; unknown labels are shown as 'class <id>'",
                info.num_classes,
                len(labels),
            )
        sources = (Source.of(item, i) for i, item in enumerate(inputs))
        decoders = ThreadPoolExecutor(self.workers, thread_name_prefix="resnext-decode")
        senders: WorkerPool[InferSession] = WorkerPool(concurrency, self._transport.infer_session, name="resnext-infer")
        try:

            def decode(source: Source) -> Future[Prepared]:
                return decoders.submit(self._prepare, info, source)

            def send(batch: Batch) -> Future[list[ClassificationResult]]:
                return senders.submit(
                    lambda session, b: self._infer(session, info, b, top_k, server_topk, labels), batch
                )

            window = size * (concurrency + 1) + self.workers
            prepared = ordered_map(decode, sources, window)
            for results in ordered_map(send, make_batches(prepared, size), concurrency):
                yield from results
        finally:
            decoders.shutdown(wait=False, cancel_futures=True)
            senders.shutdown(timeout_s=1.0)

    def resolve_batch_size(self, batch_size: int | None = None) -> int:
        """The batch size a run uses: ``batch_size``, or the default for the model.

        The default is 8, at most the model's ``max_batch_size``; 1 for a model without batching.

        Raises:
            ClientError: if the model cannot take batches of ``batch_size``.
            ServerUnavailable: if the server is not reachable within ``timeout_s``.
            ModelNotReady: if the model is missing, not ready or not a usable classifier.
        """
        info = self.model_info
        if batch_size is None:
            return min(DEFAULT_BATCH_SIZE, info.max_batch_size) if info.batching else 1
        if batch_size < 1:
            raise ClientError(f"batch size must be >= 1, got {batch_size}")
        if not info.batching and batch_size > 1:
            raise ClientError(f"model {info.name} does not batch (max_batch_size 0): use batch size 1")
        if info.batching and batch_size > info.max_batch_size:
            raise ClientError(
                f"batch size {batch_size} exceeds the max_batch_size {info.max_batch_size} of model {info.name}"
            )
        return batch_size

    def _prepare(self, info: ModelInfo, source: Source) -> Prepared:
        """Decode and preprocess one input in a worker thread; never raises."""
        try:
            img = load_source(source, max_pixels=self.max_pixels, url_timeout_s=self.url_timeout_s)
            array = preprocess_image(img, self.spec.preprocessing)
        except INPUT_ERRORS as exc:
            return Prepared(source, error=str(exc))
        except Exception as exc:  # an unexpected decoder failure is still this input's alone
            logger.debug("unexpected error preparing %s", source.name, exc_info=True)
            return Prepared(source, error=f"cannot process image: {type(exc).__name__}: {exc}")
        if info.layout == "NHWC":
            array = np.ascontiguousarray(array.transpose(1, 2, 0))
        return Prepared(source, array=array.astype(_NUMPY_DTYPES[info.datatype], copy=False))

    def _infer(
        self,
        session: InferSession,
        info: ModelInfo,
        batch: Batch,
        top_k: int,
        server_topk: bool,
        labels: Sequence[str],
    ) -> list[ClassificationResult]:
        """Send one batch and turn its outputs into results (in a request thread)."""
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
                results.append(self._result(entry.source.name, next(row), top_k, server_topk, labels))
        return results

    @staticmethod
    def _result(
        name: str, row: np.ndarray, top_k: int, server_topk: bool, labels: Sequence[str]
    ) -> ClassificationResult:
        try:
            if server_topk:
                predictions = parse_classification(list(row), labels)
            else:
                predictions = top_k_from_logits(row, labels, top_k)
        except InferenceError as exc:
            return ClassificationResult(name, error=str(exc))
        return ClassificationResult(name, predictions=predictions)


def model_info_from(model: str, meta: dict[str, Any], config: dict[str, Any], spec: ModelSpec) -> ModelInfo:
    """Describe a served model from its metadata and configuration dicts.

    Raises:
        ModelNotReady: if the model is not an image classifier this client can feed: not one
            FP32/FP16 image input of 3 channels at the spec's crop size, or no output.
    """
    inputs = meta.get("inputs") or []
    outputs = meta.get("outputs") or []
    if len(inputs) != 1 or not outputs:
        raise ModelNotReady(f"model {model} has {len(inputs)} inputs and {len(outputs)} outputs; need 1 image input")
    tensor = inputs[0]
    datatype = str(tensor.get("datatype", ""))
    if datatype not in _NUMPY_DTYPES:
        raise ModelNotReady(f"model {model} takes {datatype} input; the client sends FP32 or FP16")
    max_batch = int(config.get("max_batch_size", 0) or 0)
    shape = [int(d) for d in tensor.get("shape", [])]
    if max_batch > 0 and len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3:
        raise ModelNotReady(f"model {model} input shape {shape} is not an image (C, H, W or H, W, C)")
    config_inputs = config.get("input") or [{}]
    fmt = str(config_inputs[0].get("format", "FORMAT_NONE"))
    layout = _LAYOUTS.get(fmt) or ("NCHW" if shape[0] == 3 else "NHWC" if shape[2] == 3 else "")
    if not layout:
        raise ModelNotReady(f"model {model} input shape {shape} has no 3-channel axis and format {fmt}")
    channels, height, width = (shape[0], shape[1], shape[2]) if layout == "NCHW" else (shape[2], shape[0], shape[1])
    crop = spec.preprocessing.crop
    if channels != 3 or height not in (-1, crop) or width not in (-1, crop):
        raise ModelNotReady(
            f"model {model} expects {layout} {shape}, but the preprocessing gives 3x{crop}x{crop} "
            "(resnext_triton.spec.Preprocessing)"
        )
    full: tuple[int, int, int] = (3, crop, crop) if layout == "NCHW" else (crop, crop, 3)
    names = [str(o.get("name")) for o in outputs]
    output_name = spec.output_name if spec.output_name in names else names[0]
    out_meta = outputs[names.index(output_name)]
    out_shape = [int(d) for d in out_meta.get("shape", [])]
    num_classes = out_shape[-1] if out_shape and out_shape[-1] > 0 else None
    config_outputs = {str(o.get("name")): o for o in config.get("output") or []}
    server_labels = bool(config_outputs.get(output_name, {}).get("label_filename"))
    return ModelInfo(
        name=model,
        input_name=str(tensor["name"]),
        datatype=datatype,
        layout=layout,
        input_shape=full,
        max_batch_size=max_batch,
        output_name=output_name,
        num_classes=num_classes,
        server_labels=server_labels,
    )
