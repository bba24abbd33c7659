"""TritonClassifier: classify images with a ResNeXt model served by Triton (gRPC or HTTP).

Example::

    from resnext_triton.client import TritonClassifier

    with TritonClassifier("127.0.0.1:8001", "grpc", timeout_s=10) as clf:
        for result in clf.classify(["cat.jpg", "https://example.org/dog.png"], top_k=5):
            print(result.input, result.error or result.predictions[0].label)

The classifier finds the model and reads its input name, datatype (FP32/FP16), layout (NCHW/NHWC)
and batch limit (:mod:`.discovery`), decodes and preprocesses images in a thread pool
(:func:`.inference.prepare_input`, the parameters of :class:`resnext_triton.spec.Preprocessing`)
while up to ``concurrency`` batches are in flight (:func:`.inference.infer_batch`), and streams
results back in input order (:mod:`.pipeline`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from types import TracebackType
from typing import TypeVar

from PIL import Image

from resnext_triton.client.discovery import ModelDiscovery, ModelInfo
from resnext_triton.client.errors import ClientError
from resnext_triton.client.inference import infer_batch, prepare_input
from resnext_triton.client.inputs import DEFAULT_URL_TIMEOUT_S, Source
from resnext_triton.client.labels import resolve_labels
from resnext_triton.client.pipeline import Batch, Prepared, WorkerPool, make_batches, ordered_map
from resnext_triton.client.results import ClassificationResult
from resnext_triton.client.transport import (
    PROTOCOLS,
    InferSession,
    Transport,
    default_url,
    make_transport,
    normalize_url,
)
from resnext_triton.client.watchdog import Watchdog
from resnext_triton.preprocess import DEFAULT_MAX_PIXELS
from resnext_triton.spec import ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 300.0
DEFAULT_BATCH_SIZE = 8
DEFAULT_CONCURRENCY = 2

InputLike = Source | str | os.PathLike[str] | bytes | Image.Image
R = TypeVar("R")


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
        timeout_s: seconds to wait for the server and model to become ready, in all; also how long
            a request may wait before the server's liveness is probed, and how long the probe may
            take (a server that does not answer it fails the run: :mod:`.watchdog`).
        request_timeout_s: seconds allowed for one inference request, in all.
        spec: the model spec (preprocessing and labels); default :class:`ModelSpec()`.
        labels: class labels overriding the served model's (:attr:`labels`).
        max_pixels: per-image pixel limit (decompression bombs are refused).
        url_timeout_s: seconds allowed to download one URL input, in all.
        workers: decoding/preprocessing threads (default: CPU count, at most 8).
        pipeline: send encoded files to the model's image pipeline (``<model>_image``), which
            preprocesses on the server; a model whose input is UINT8 bytes is one already.

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
        pipeline: bool = False,
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
        self.request_timeout_s = request_timeout_s
        self.spec = spec or ModelSpec()
        self.max_pixels = max_pixels
        self.url_timeout_s = url_timeout_s
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._labels: list[str] | None = list(labels) if labels is not None else None
        self._transport = self._new_transport()
        self._discovery = ModelDiscovery(self._transport, self.spec, model, pipeline=pipeline)
        self._info: ModelInfo | None = None

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
    def model_selection(self) -> str:
        """How the model was chosen: as requested, from the repository index, or by probing names."""
        return self._discovery.selection

    @property
    def labels(self) -> list[str]:
        """The class labels: those given, else the served model's (:func:`.labels.resolve_labels`).

        Raises:
            ServerUnavailable: if the server is not reachable within ``timeout_s``.
            ModelNotReady: if the model is missing, not ready or not a usable classifier.
        """
        if self._labels is None:
            self._labels = resolve_labels(self.model_info, self.spec, self._transport)
        return self._labels

    def wait_until_ready(self, timeout_s: float | None = None) -> ModelInfo:
        """Wait for the server, then pick and inspect the model (:meth:`.ModelDiscovery.wait_until_ready`).

        Connection failures and a model still loading are retried until ``timeout_s`` (default:
        the constructor's) has passed, the calls to the server included; a missing, failed or
        unusable model raises at once.

        Raises:
            ServerUnavailable: if the server is not live within the timeout.
            ModelNotReady: if the model is missing, not ready or not a usable classifier.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        with self._transport.deadline(timeout_s):
            self._info = self._discovery.wait_until_ready(timeout_s)
        return self._info

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
            ServerUnavailable: if the server cannot be reached, is lost during the run, or stops
                answering (a request waits ``timeout_s`` and the liveness probe gets no answer
                within ``timeout_s`` either).
            ModelNotReady: if the model is missing or unusable.
            ClientError: for an invalid top_k, batch size or concurrency.
        """
        info = self.model_info
        size = self.resolve_batch_size(batch_size)
        if top_k < 1 or (info.num_classes is not None and top_k > info.num_classes):
            raise ClientError(f"top_k must be between 1 and the number of classes, got {top_k}")
        labels = self.labels
        if info.num_classes is not None and info.num_classes != len(labels):
            logger.warning(
                "the model has %d classes but the label list %d; unknown labels are shown as 'class <id>'",
                info.num_classes,
                len(labels),
            )
        infer = partial(infer_batch, info=info, top_k=top_k, server_topk=server_topk, labels=labels)
        yield from self.stream(inputs, infer, batch_size=size, concurrency=concurrency)

    def stream(
        self,
        inputs: Iterable[InputLike],
        work: Callable[[InferSession, Batch], list[R]],
        *,
        batch_size: int,
        concurrency: int,
    ) -> Iterator[R]:
        """Decode and preprocess inputs in threads and hand them to ``work`` in batches; yield its results.

        The engine under :meth:`classify_iter` (and :meth:`.embed.TritonEmbedder.embed_iter`):
        ``work`` sends one batch through a session and returns one result per entry, with up to
        ``concurrency`` batches in flight under the watchdog; results come in input order.

        Raises:
            ServerUnavailable: if the server cannot be reached, is lost, or stops answering.
            ClientError: for a concurrency below 1.
        """
        if concurrency < 1:
            raise ClientError(f"concurrency must be >= 1, got {concurrency}")
        info = self.model_info
        size = batch_size
        sources = (Source.of(item, i) for i, item in enumerate(inputs))
        decoders = ThreadPoolExecutor(self.workers, thread_name_prefix="resnext-decode")
        senders: WorkerPool[InferSession] = WorkerPool(concurrency, self._transport.infer_session, name="resnext-infer")
        prepare = partial(
            prepare_input,
            info=info,
            preprocessing=info.preprocessing or self.spec.preprocessing,
            max_pixels=self.max_pixels,
            url_timeout_s=self.url_timeout_s,
        )
        watchdog = Watchdog(self._new_transport, patience_s=self.timeout_s)
        try:

            def decode(source: Source) -> Future[Prepared]:
                return decoders.submit(prepare, source)

            def watched(session: InferSession, batch: Batch) -> list[R]:
                with watchdog.request():
                    return work(session, batch)

            def send(batch: Batch) -> Future[list[R]]:
                return senders.submit(watched, batch)

            window = size * (concurrency + 1) + self.workers
            prepared = ordered_map(decode, sources, window)
            with watchdog:
                batches = make_batches(prepared, size)
                for results in ordered_map(send, batches, concurrency, abort=watchdog.abort):
                    yield from results
        finally:
            decoders.shutdown(wait=False, cancel_futures=True)
            senders.shutdown(timeout_s=0.0 if watchdog.abort.done() else 1.0)

    def _new_transport(self) -> Transport:
        return make_transport(
            self.protocol, self.url, timeout_s=self.timeout_s, request_timeout_s=self.request_timeout_s
        )

    def resolve_batch_size(self, batch_size: int | None = None) -> int:
        """The batch size a run uses: ``batch_size``, or the default for the model.

        The default is 8, at most the model's ``max_batch_size``; 1 for a model without batching.

        Raises:
            ClientError: if the model cannot take batches of ``batch_size``.
            ServerUnavailable: if the server is not reachable within ``timeout_s``.
            ModelNotReady: if the model is missing, not ready or not a usable classifier.
        """
        info = self.model_info
        if info.takes_bytes:  # files differ in size: one per request, batched on the server
            if batch_size not in (None, 1):
                logger.info("the image pipeline takes one file per request; the server batches them (not -b)")
            return 1
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
