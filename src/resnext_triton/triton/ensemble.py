"""The image pipeline: encoded image bytes in, logits (and labels) out, as Triton models.

For every served format, an ensemble named ``<model>_image`` (``resnext101_32x4d_onnx_image``,
``resnext101_32x4d_torchscript_image``, ``resnext101_32x4d_tensorrt_fp16_image``) takes the encoded
file as a ``UINT8`` vector (``IMAGE``, one image per batch element) and returns the classifier's
outputs: ``OUTPUT__0`` with its ``label_filename``, so the classification extension works on it,
and ``FEATURES__1``, the image embedding (only the outputs a request names are sent). Its first
step is ``<variant>_preprocess``, a Triton Python model that runs :mod:`resnext_triton.preprocess`,
the very module the client uses, with the preprocessing parameters written into its config.
"""

from __future__ import annotations

from importlib import resources

from tritonclient.grpc import model_config_pb2 as mc

from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.config import (
    ServingOptions,
    add_labels_digest,
    add_outputs,
    add_preprocessing_parameters,
)

IMAGE_INPUT = "IMAGE"
"""The ensembles' input: the encoded image file as UINT8, shape [batch, bytes]."""
PIXELS = "PIXELS"
PIXELS_FP16 = "PIXELS_FP16"
ENSEMBLE_SUFFIX = "_image"
PREPROCESS_SUFFIX = "_preprocess"
PREPROCESS_MODEL_FILE = "model.py"


def preprocess_model_name(spec: ModelSpec) -> str:
    """The shared preprocessing model, e.g. ``resnext101_32x4d_preprocess``."""
    return spec.variant + PREPROCESS_SUFFIX


def ensemble_name(spec: ModelSpec, fmt: Format) -> str:
    """The image pipeline in front of a format's model, e.g. ``resnext101_32x4d_onnx_image``."""
    return spec.model_name(fmt) + ENSEMBLE_SUFFIX


def classifier_of(ensemble: str) -> str | None:
    """The classifier model an ensemble name stands in front of (by the naming rule), else None."""
    return ensemble[: -len(ENSEMBLE_SUFFIX)] if ensemble.endswith(ENSEMBLE_SUFFIX) else None


def preprocess_model_source() -> str:
    """The Python model's source (``triton/models/preprocess/model.py`` of this package)."""
    path = resources.files("resnext_triton.triton").joinpath("models", "preprocess", PREPROCESS_MODEL_FILE)
    return path.read_text(encoding="utf-8")


def build_preprocess_config(spec: ModelSpec, options: ServingOptions) -> mc.ModelConfig:
    """The preprocessing Python model: CPU on every host, dynamic batching across requests.

    ``allow_ragged_batch`` lets the batcher hand requests of different file sizes to one
    ``execute()``, where they are decoded in parallel.
    """
    config = mc.ModelConfig(name=preprocess_model_name(spec), backend="python", max_batch_size=options.max_batch_size)
    config.input.add(name=IMAGE_INPUT, data_type=mc.TYPE_UINT8, dims=[-1], allow_ragged_batch=True)
    config.output.add(name=PIXELS, data_type=mc.TYPE_FP32, dims=spec.input_shape)
    config.output.add(name=PIXELS_FP16, data_type=mc.TYPE_FP16, dims=spec.input_shape)
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    add_preprocessing_parameters(config, spec)
    return config


def build_ensemble_config(spec: ModelSpec, fmt: Format, options: ServingOptions) -> mc.ModelConfig:
    """The ensemble ``<model>_image``: preprocessing, then the format's model (same on GPU and CPU hosts)."""
    half = options.fp16_input and fmt is Format.TORCHSCRIPT
    config = mc.ModelConfig(name=ensemble_name(spec, fmt), platform="ensemble", max_batch_size=options.max_batch_size)
    config.input.add(name=IMAGE_INPUT, data_type=mc.TYPE_UINT8, dims=[-1])
    add_outputs(config, spec, mc.TYPE_FP16 if half else mc.TYPE_FP32)
    pixels = PIXELS_FP16 if half else PIXELS
    pre = config.ensemble_scheduling.step.add(model_name=preprocess_model_name(spec), model_version=-1)
    pre.input_map[IMAGE_INPUT] = IMAGE_INPUT
    pre.output_map[pixels] = "pixels"
    classify = config.ensemble_scheduling.step.add(model_name=spec.model_name(fmt), model_version=-1)
    classify.input_map[spec.input_name] = "pixels"
    for output in (spec.output_name, spec.features_name):
        classify.output_map[output] = output
    add_preprocessing_parameters(config, spec)
    add_labels_digest(config, spec)
    return config
