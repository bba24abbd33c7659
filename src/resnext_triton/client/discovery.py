"""Model discovery: wait for the server, pick the model and read what it takes (:class:`ModelInfo`).

When no model is named, a ready ResNeXt model is picked from the repository index in the order of
:data:`MODEL_PREFERENCE`; on a server that restricts the model-repository API (it needs an admin
token) the spec's model names are probed for readiness instead. The chosen model's metadata and
configuration then give the input name, datatype, layout, batch limit, output and class count.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnext_triton.client.errors import ClientError, ModelNotReady, ServerUnavailable
from resnext_triton.client.transport import Transport
from resnext_triton.spec import LABELS_DIGEST_PARAMETER, Format, ModelSpec, Preprocessing

logger = logging.getLogger(__name__)

MODEL_PREFERENCE = (Format.ONNX, Format.TORCHSCRIPT, Format.TENSORRT)
"""The order in which a ready model is picked when none is named (FP32 formats first)."""

NUMPY_DTYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}
"""The input datatypes the client can send, as numpy dtypes (UINT8: encoded files for an image pipeline)."""
PIPELINE_SUFFIX = "_image"
"""An image pipeline (ensemble) is named after the model it stands in front of, plus this suffix."""
_LAYOUTS = {"FORMAT_NCHW": "NCHW", "FORMAT_NHWC": "NHWC"}


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
    takes_bytes: bool = False
    """An image pipeline: the input is the encoded file (UINT8 [bytes]), preprocessed on the server."""
    preprocessing: Preprocessing | None = None
    """The preprocessing the model declares in its config parameters (None: it declares none)."""
    features_name: str | None = None
    """The features output (the pooled features before ``fc``), if the model has one."""
    feature_dim: int | None = None
    """The width of the features output."""
    labels_sha256: str | None = None
    """The sha256 of the served label file, from the config parameters (None: not declared)."""

    @property
    def batching(self) -> bool:
        """Whether requests carry a batch dimension (``max_batch_size > 0``)."""
        return self.max_batch_size > 0


def pick_model(index: list[dict[str, Any]], spec: ModelSpec, *, pipeline: bool = False) -> str | None:
    """The preferred ready ResNeXt model of a repository index (its image pipeline if asked), or None."""
    suffix = PIPELINE_SUFFIX if pipeline else ""
    ready = sorted({str(m.get("name")) for m in index if m.get("state") == "READY"})
    ready = [name for name in ready if name.endswith(PIPELINE_SUFFIX) == pipeline]
    preferred = [spec.model_name(fmt) + suffix for fmt in MODEL_PREFERENCE]
    for name in preferred:
        if name in ready:
            return name
    for fmt in MODEL_PREFERENCE:
        for name in ready:
            if "resnext" in name.lower() and name.endswith(fmt.model_suffix + suffix):
                return name
    others = [name for name in ready if "resnext" in name.lower() and not name.endswith("_preprocess")]
    return others[0] if others else None


def describe_index(index: list[dict[str, Any]]) -> str:
    """One line naming every model of a repository index with its state (and reason)."""
    if not index:
        return "the repository is empty"
    parts = []
    for entry in index:
        state = entry.get("state") or "NOT LOADED"
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        parts.append(f"{entry.get('name')} [{state}{reason}]")
    return "models: " + ", ".join(parts)


class ModelDiscovery:
    """Finds a usable classifier model on a server and describes it.

    Args:
        transport: the connection to the server (its ``url`` and ``protocol`` name it in messages).
        spec: the model spec: the model names to prefer, the crop size, the output name.
        model: the model name; ``None`` picks a ready ResNeXt model.
        pipeline: use the image pipeline (``<model>_image``) of the named or picked model.
    """

    def __init__(self, transport: Transport, spec: ModelSpec, model: str | None, *, pipeline: bool = False):
        self._transport = transport
        self.spec = spec
        self.pipeline = pipeline
        if pipeline and model and not model.endswith(PIPELINE_SUFFIX):
            model += PIPELINE_SUFFIX
        self.requested_model = model
        self.selection = "as requested" if model else "not yet picked"
        """How the model was chosen: as requested, from the repository index, or by probing names."""

    def wait_until_ready(self, timeout_s: float) -> ModelInfo:
        """Wait for the server, then pick and inspect the model.

        Only connection failures (and a model still loading) are retried, with backoff, until
        ``timeout_s`` has passed; a missing, failed or unusable model raises at once.

        Raises:
            ServerUnavailable: if the server is not live within the timeout.
            ModelNotReady: if the model is missing, not ready or not a usable classifier.
        """
        url, protocol = self._transport.url, self._transport.protocol
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            try:
                if not self._transport.server_live():
                    raise ServerUnavailable("the server is not live")
                model = self._resolve_model()
                if model is not None:
                    info = self._inspect(model)
                    logger.info("model %s ready at %s (%s)", model, url, protocol)
                    return info
                last: Exception = ModelNotReady("model still loading")
            except ServerUnavailable as exc:
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if isinstance(last, ServerUnavailable):
                    raise ServerUnavailable(
                        f"Triton server at {url} ({protocol}) is not reachable after {timeout_s:g} s: {last}"
                    ) from last
                raise ModelNotReady(
                    f"model {self.requested_model} is still loading on {url} after {timeout_s:g} s"
                ) from last
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    def _resolve_model(self) -> str | None:
        """The model to use; None while the requested model is still loading.

        Raises:
            ModelNotReady: if no usable model is there.
        """
        url = self._transport.url
        index = self._transport.repository_index() if self.requested_model is None else None
        if self.requested_model is None:
            picked = (
                pick_model(index, self.spec, pipeline=self.pipeline) if index is not None else self._probe_preferred()
            )
            self.selection = (
                "picked from the repository index"
                if index is not None
                else "picked by probing readiness: the index is restricted"
            )
            if picked is None:
                raise ModelNotReady(f"no ready ResNeXt model on Triton at {url}; {self._describe_models(index)}")
            return picked
        name = self.requested_model
        if self._transport.model_ready(name):
            return name
        index = self._transport.repository_index()
        states = {str(e.get("state")) for e in index or [] if e.get("name") == name}
        if "LOADING" in states:
            return None
        where = "is not ready" if states or index is None else "is not in the repository"
        raise ModelNotReady(f"model {name!r} {where} on Triton at {url}; {self._describe_models(index)}")

    def _probe_preferred(self) -> str | None:
        """The first ready model among the spec's names (when the repository index is restricted)."""
        suffix = PIPELINE_SUFFIX if self.pipeline else ""
        for fmt in MODEL_PREFERENCE:
            name = self.spec.model_name(fmt) + suffix
            if self._transport.model_ready(name):
                return name
        return None

    def _describe_models(self, index: list[dict[str, Any]] | None) -> str:
        if index is not None:
            return describe_index(index)
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
    if datatype not in NUMPY_DTYPES:
        raise ModelNotReady(f"model {model} takes {datatype} input; the client sends FP32, FP16 or encoded files")
    max_batch = int(config.get("max_batch_size", 0) or 0)
    shape = [int(d) for d in tensor.get("shape", [])]
    served = _declared_preprocessing(model, config)
    crop = (served or spec.preprocessing).crop
    if datatype == "UINT8":
        layout, full = _pipeline_input(model, shape, max_batch, crop)
    else:
        layout, full = _image_input(model, shape, max_batch, crop, config)
    output_name, num_classes, server_labels = _output(outputs, config, spec)
    features = {str(o.get("name")): [int(d) for d in o.get("shape", [])] for o in outputs}.get(spec.features_name)
    digest = ((config.get("parameters") or {}).get(LABELS_DIGEST_PARAMETER) or {}).get("string_value")
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
        takes_bytes=datatype == "UINT8",
        preprocessing=served,
        features_name=spec.features_name if features else None,
        feature_dim=features[-1] if features and features[-1] > 0 else None,
        labels_sha256=str(digest) if digest else None,
    )


def _image_input(
    model: str, shape: list[int], max_batch: int, crop: int, config: dict[str, Any]
) -> tuple[str, tuple[int, int, int]]:
    """(layout, full input shape) of an image-tensor input.

    Raises:
        ModelNotReady: if it is not 3 channels at the crop size.
    """
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
    if channels != 3 or height not in (-1, crop) or width not in (-1, crop):
        raise ModelNotReady(
            f"model {model} expects {layout} {shape}, but the preprocessing gives 3x{crop}x{crop} "
            "(resnext_triton.spec.Preprocessing)"
        )
    return layout, ((3, crop, crop) if layout == "NCHW" else (crop, crop, 3))


def _pipeline_input(model: str, shape: list[int], max_batch: int, crop: int) -> tuple[str, tuple[int, int, int]]:
    """An image pipeline's input: one encoded file (UINT8 [bytes]) per batch element.

    Raises:
        ModelNotReady: if the UINT8 input is not one variable-length vector per batch element.
    """
    body = shape[1:] if max_batch > 0 else shape
    if body != [-1]:
        raise ModelNotReady(f"model {model} takes UINT8 {shape}; an image pipeline takes one encoded file [-1]")
    return "", (3, crop, crop)


def _declared_preprocessing(model: str, config: dict[str, Any]) -> Preprocessing | None:
    """The preprocessing a model's config parameters declare; None (with a warning) if none.

    Raises:
        ModelNotReady: if the declared parameters are malformed.
    """
    params = {str(k): str((v or {}).get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}
    try:
        served = Preprocessing.from_parameters(params)
    except ValueError as exc:
        raise ModelNotReady(f"model {model}: {exc}") from exc
    if served is None:
        logger.warning("model %s declares no preprocessing parameters; using the default spec", model)
    return served


def _output(outputs: list[dict[str, Any]], config: dict[str, Any], spec: ModelSpec) -> tuple[str, int | None, bool]:
    """(output name, class count if known, whether the server holds its labels)."""
    names = [str(o.get("name")) for o in outputs]
    output_name = spec.output_name if spec.output_name in names else names[0]
    out_shape = [int(d) for d in outputs[names.index(output_name)].get("shape", [])]
    num_classes = out_shape[-1] if out_shape and out_shape[-1] > 0 else None
    config_outputs = {str(o.get("name")): o for o in config.get("output") or []}
    return output_name, num_classes, bool(config_outputs.get(output_name, {}).get("label_filename"))
