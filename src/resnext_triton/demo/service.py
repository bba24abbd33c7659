"""What the demo page asks of Triton, in plain Python: the served models, and one photo's answer.

:class:`DemoService` holds one :class:`~resnext_triton.client.TritonClassifier` per model and turns
everything that can go wrong into an :class:`Answer` with a message for the page (Triton
unreachable, model not ready, not an image), so that the page never shows a traceback. It
imports neither gradio nor torch.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from resnext_triton.client import (
    ClientError,
    ModelNotReady,
    Prediction,
    ServerUnavailable,
    TritonClassifier,
)
from resnext_triton.client.discovery import MODEL_PREFERENCE, PIPELINE_SUFFIX, ModelInfo
from resnext_triton.client.transport import make_transport
from resnext_triton.spec import Format, ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3.0
"""Seconds the page waits for Triton before saying it is unreachable."""
DEFAULT_REQUEST_TIMEOUT_S = 60.0
TOP_K = 5

_FORMAT_TITLES = {
    Format.ONNX: "ONNX",
    Format.TORCHSCRIPT: "TorchScript",
    Format.TENSORRT: "TensorRT",
    Format.ONNX_INT8: "ONNX",
    Format.TENSORRT_INT8: "TensorRT",
}
FORMAT_ORDER = (*MODEL_PREFERENCE, *(f for f in Format if f not in MODEL_PREFERENCE))
"""The dropdown's order: the client's preference (ONNX, TorchScript, TensorRT), then the others (INT8)."""


class Problem(enum.Enum):
    """Why a photo got no answer."""

    UNREACHABLE = "Triton is unreachable"
    MODEL = "Model not ready"
    INPUT = "Cannot classify this file"
    CLIENT = "Client error"
    INTERNAL = "Unexpected error"


@dataclass(frozen=True)
class ServedModel:
    """A model the page offers: its Triton name, format, precision, and whether it is an image pipeline.

    An image pipeline (``<model>_image``) takes the encoded file and preprocesses it on the server.
    """

    name: str
    format: Format | None
    precision: str
    pipeline: bool = False

    @property
    def title(self) -> str:
        """``ONNX FP32``, ``TorchScript FP32``, ``TensorRT FP16``, ``ONNX INT8``, ``ONNX FP32 pipeline``."""
        words = [_FORMAT_TITLES[self.format] if self.format else "model", self.precision]
        if self.pipeline:
            words.append("pipeline")
        return " ".join(w for w in words if w)

    @property
    def choice(self) -> str:
        """The dropdown entry: title and name."""
        return f"{self.title} · {self.name}"


def parse_model_name(name: str) -> tuple[Format | None, bool]:
    """The format a served model name ends with, and whether it is an image pipeline (``_image``)."""
    pipeline = name.endswith(PIPELINE_SUFFIX)
    base = name.removesuffix(PIPELINE_SUFFIX)
    for fmt in sorted(Format, key=lambda f: -len(f.model_suffix)):  # onnx_int8 before onnx
        if base.endswith("_" + fmt.model_suffix):
            return fmt, pipeline
    return None, pipeline


def precision_of(fmt: Format | None, datatype: str) -> str:
    """FP16 for the TensorRT FP16 plan, INT8 for the INT8 formats, else the input datatype (FP32/FP16)."""
    if fmt is Format.TENSORRT:
        return "FP16"
    if fmt is not None and fmt.is_int8:
        return "INT8"
    return datatype if datatype in ("FP32", "FP16") else ""


def model_rank(name: str) -> tuple[bool, int, str]:
    """Sort key of the dropdown: models before pipelines, formats in :data:`FORMAT_ORDER`, then by name."""
    fmt, pipeline = parse_model_name(name)
    return (pipeline, FORMAT_ORDER.index(fmt) if fmt else len(FORMAT_ORDER), name)


@dataclass(frozen=True)
class Answer:
    """What the page shows for one photo: the top-5 and who answered how fast, or a problem.

    ``elapsed_ms`` is measured by the client around one classification: decoding and
    preprocessing the photo, and the inference request's round trip (not the model discovery).
    """

    input: str
    model: str | None = None
    model_title: str | None = None
    predictions: tuple[Prediction, ...] = ()
    elapsed_ms: float | None = None
    problem: Problem | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the photo was classified."""
        return self.problem is None

    @property
    def confidences(self) -> dict[str, float]:
        """Label -> probability of the top-5, best first (what ``gr.Label`` draws as bars)."""
        return {p.label: float(p.probability or 0.0) for p in self.predictions}

    @property
    def message(self) -> str:
        """One line of Markdown for the page."""
        if self.problem is not None:
            return f"**{self.problem.value}**: {self.detail}"
        top = self.predictions[0].probability if self.predictions else None
        best = f" · top-1 probability {100 * top:.2f} %" if top is not None else ""
        took = f" in **{self.elapsed_ms:.0f} ms**" if self.elapsed_ms is not None else ""
        return f"**{self.model}** ({self.model_title}) answered{took}{best}"


@dataclass
class DemoService:
    """The demo's link to Triton through :class:`~resnext_triton.client.TritonClassifier`.

    Args:
        url: Triton's ``host:port`` (default: the protocol's standard local port).
        protocol: ``"grpc"`` or ``"http"``.
        timeout_s: how long to wait for the server before reporting it unreachable.
        request_timeout_s: seconds allowed for one inference request.
        spec: the model spec (model names, preprocessing, labels).

    Raises:
        ValueError: for an unknown protocol or a non-positive timeout.
    """

    url: str | None = None
    protocol: str = "grpc"
    timeout_s: float = DEFAULT_TIMEOUT_S
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    spec: ModelSpec = field(default_factory=ModelSpec)
    _classifiers: dict[str | None, TritonClassifier] = field(default_factory=dict, init=False, repr=False)
    _served: dict[str, ServedModel] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        probe = self._classifier(None)  # validates protocol, URL and timeouts now, not on the first click
        self.url = probe.url

    @property
    def where(self) -> str:
        """``127.0.0.1:8001 (grpc)``."""
        return f"{self.url} ({self.protocol})"

    # ------------------------------------------------------------------ models

    def served_models(self) -> list[ServedModel]:
        """The ready ResNeXt models this client can use, in :func:`model_rank` order.

        Taken from Triton's repository index, or, where the server restricts the index (the local
        Triton does), by asking whether each of the spec's model names, and its image pipeline's,
        is ready. A model the client cannot feed is left out (and logged).

        Raises:
            ServerUnavailable: if Triton cannot be reached.
        """
        transport = make_transport(
            self.protocol, str(self.url), timeout_s=self.timeout_s, request_timeout_s=self.request_timeout_s
        )
        try:
            if not transport.server_live():
                raise ServerUnavailable(f"Triton at {self.where} is not live")
            index = transport.repository_index()
            if index is None:
                models = [self.spec.model_name(f) for f in FORMAT_ORDER]
                names = [n for n in (*models, *(m + PIPELINE_SUFFIX for m in models)) if transport.model_ready(n)]
            else:
                ready = {str(e.get("name")) for e in index if e.get("state") == "READY"}
                names = [n for n in ready if "resnext" in n.lower() and parse_model_name(n)[0] is not None]
        finally:
            transport.close()
        served: list[ServedModel] = []
        for name in sorted(names, key=model_rank):
            try:
                info = self._classifier(name).wait_until_ready()
            except ModelNotReady as exc:  # served, but not an image classifier this client can feed
                logger.info("not offering %s: %s", name, exc)
                continue
            served.append(self._describe(info, served))
        with self._lock:
            self._served = {m.name: m for m in served}
        return served

    def _describe(self, info: ModelInfo, known: Sequence[ServedModel] = ()) -> ServedModel:
        """A served model's entry; an image pipeline takes its precision from the model behind it."""
        fmt, pipeline = parse_model_name(info.name)
        precision = precision_of(fmt, info.datatype)
        if pipeline and not (fmt is Format.TENSORRT or (fmt is not None and fmt.is_int8)):
            base = info.name.removesuffix(PIPELINE_SUFFIX)
            precision = next((m.precision for m in known if m.name == base), "")
        return ServedModel(info.name, fmt, precision, pipeline or info.takes_bytes)

    # ------------------------------------------------------------------ classify

    def classify(self, photo: str | os.PathLike[str] | bytes, model: str | None = None) -> Answer:
        """Classify one photo (a path or encoded bytes) with ``model`` (None: the client's pick).

        Never raises for what a user can cause: an unreachable server, a model that is not
        ready, a file that is not an image each become an :class:`Answer` with a problem.
        """
        name = photo_name(photo)
        try:
            clf = self._classifier(model)
            info = clf.model_info  # discovery (server, model, metadata) is not part of the timing
            started = time.perf_counter()
            [result] = clf.classify([photo], top_k=TOP_K, concurrency=1)
            elapsed_ms = (time.perf_counter() - started) * 1000
        except ServerUnavailable as exc:
            self._forget(model)
            detail = f"{exc}. Start it (`./deploy.sh`) or check `--url`/`-i`, then try again."
            return Answer(name, model=model, problem=Problem.UNREACHABLE, detail=detail)
        except ModelNotReady as exc:
            self._forget(model)
            return Answer(name, model=model, problem=Problem.MODEL, detail=f"{exc}. Press *Refresh models*.")
        except ClientError as exc:
            return Answer(name, model=model, problem=Problem.CLIENT, detail=str(exc))
        if not result.ok:
            return Answer(name, model=info.name, problem=Problem.INPUT, detail=f"`{name}`: {result.error}")
        with self._lock:
            served = self._served.get(info.name) or self._describe(info, list(self._served.values()))
        return Answer(
            name,
            model=info.name,
            model_title=served.title,
            predictions=result.predictions,
            elapsed_ms=elapsed_ms,
        )

    # ------------------------------------------------------------------ classifiers

    def _classifier(self, model: str | None) -> TritonClassifier:
        with self._lock:
            clf = self._classifiers.get(model)
            if clf is None:
                clf = TritonClassifier(
                    self.url,
                    self.protocol,
                    model,
                    timeout_s=self.timeout_s,
                    request_timeout_s=self.request_timeout_s,
                    spec=self.spec,
                    workers=1,
                )
                self._classifiers[model] = clf
            return clf

    def _forget(self, model: str | None) -> None:
        """Drop a model's classifier so that the next request finds the server and model afresh."""
        with self._lock:
            clf = self._classifiers.pop(model, None)
        if clf is not None:
            clf.close()

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            classifiers, self._classifiers = list(self._classifiers.values()), {}
        for clf in classifiers:
            clf.close()


def photo_name(photo: str | os.PathLike[str] | bytes) -> str:
    """The name a photo is shown under: the file name, or ``<upload>`` for bytes."""
    return "<upload>" if isinstance(photo, bytes) else Path(photo).name


def sample_choices(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """(path, caption) pairs for the sample gallery: caption is the file name without extension."""
    return [(str(p), p.stem.replace("_", " ")) for p in paths]
