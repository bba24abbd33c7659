"""The single source of truth for each model variant.

The exporter, the Triton config writer and the client all read a :class:`ModelSpec`, so the
tensor names, shapes and preprocessing can never drift apart. This module imports neither torch
nor tritonclient: the client depends on it.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"
FEATURES_NAME = "FEATURES__1"
"""The second output: the pooled features before ``fc`` (the image embedding). ``<name>__<index>``
is the one spelling every backend takes: the pytorch backend maps it to the position of the
TorchScript module's result (index 1), ONNX Runtime and TensorRT to the graph's tensor of that name."""
LABELS_DIGEST_PARAMETER = "labels_sha256"
"""The ``config.pbtxt`` parameter holding :func:`labels_digest` of the model's label file."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_LABELS = "imagenet_labels.txt"
PARAMETER_PREFIX = "preprocess_"
"""Prefix of the preprocessing keys in a served model's ``config.pbtxt`` ``parameters``."""


class Format(enum.StrEnum):
    """A serialized model format Triton can serve."""

    TORCHSCRIPT = "torchscript"
    ONNX = "onnx"
    ONNX_INT8 = "onnx_int8"
    TENSORRT = "tensorrt"
    TENSORRT_INT8 = "tensorrt_int8"
    """A TensorRT INT8 plan built from a symmetric QDQ graph (explicit quantization)."""

    @property
    def model_suffix(self) -> str:
        """The suffix of the model directory in the repository."""
        return "tensorrt_fp16" if self is Format.TENSORRT else self.value

    @property
    def is_plan(self) -> bool:
        """True for TensorRT plans: GPU-only, and loadable only by the TensorRT and GPU that built them."""
        return self in (Format.TENSORRT, Format.TENSORRT_INT8)

    @property
    def is_int8(self) -> bool:
        """True for the INT8 formats, judged by data tolerances (SQNR) rather than max |diff|."""
        return self in (Format.ONNX_INT8, Format.TENSORRT_INT8)

    @property
    def filename(self) -> str:
        """The default model file name Triton's backend looks for."""
        if self.is_plan:
            return "model.plan"
        return "model.pt" if self is Format.TORCHSCRIPT else "model.onnx"

    @classmethod
    def parse_list(cls, text: str) -> list[Format]:
        """Parse a comma-separated list such as ``"torchscript,onnx"``.

        Raises:
            ValueError: if a name is not a known format.
        """
        out: list[Format] = []
        for name in (part.strip().lower() for part in text.split(",")):
            if not name:
                continue
            try:
                fmt = cls(name)
            except ValueError:
                known = ", ".join(f.value for f in cls)
                raise ValueError(f"unknown format {name!r}; choose from {known}") from None
            if fmt not in out:
                out.append(fmt)
        if not out:
            raise ValueError("no format given")
        return out


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor (NVIDIA's processing utilities)."""

    resize_shorter: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.crop <= 0 or self.resize_shorter < self.crop:
            raise ValueError(f"need 0 < crop <= resize_shorter, got crop={self.crop} resize={self.resize_shorter}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(f"unsupported interpolation {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three channels, std > 0")

    def to_parameters(self) -> dict[str, str]:
        """The spec as Triton ``config.pbtxt`` parameters (strings), so it travels with the model.

        The layout is always NCHW, the values float32 before the model's own input dtype.
        """
        return {
            f"{PARAMETER_PREFIX}resize_shorter": str(self.resize_shorter),
            f"{PARAMETER_PREFIX}crop": str(self.crop),
            f"{PARAMETER_PREFIX}interpolation": self.interpolation,
            f"{PARAMETER_PREFIX}mean": ",".join(repr(v) for v in self.mean),
            f"{PARAMETER_PREFIX}std": ",".join(repr(v) for v in self.std),
            f"{PARAMETER_PREFIX}layout": "NCHW",
            f"{PARAMETER_PREFIX}dtype": "FP32",
        }

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> Preprocessing | None:
        """The spec a served model declares in its config parameters, or None if it declares none.

        Raises:
            ValueError: if the parameters are present but malformed or unsupported.
        """
        if not any(key.startswith(PARAMETER_PREFIX) for key in params):
            return None

        def get(name: str) -> str:
            try:
                return params[PARAMETER_PREFIX + name]
            except KeyError:
                raise ValueError(f"model parameters lack {PARAMETER_PREFIX}{name}") from None

        def triple(name: str) -> tuple[float, float, float]:
            values = tuple(float(v) for v in get(name).split(","))
            if len(values) != 3:
                raise ValueError(f"{PARAMETER_PREFIX}{name} needs three values, got {get(name)!r}")
            return values

        layout = params.get(PARAMETER_PREFIX + "layout", "NCHW")
        if layout != "NCHW":
            raise ValueError(f"unsupported {PARAMETER_PREFIX}layout {layout!r} (NCHW only)")
        try:
            return cls(
                resize_shorter=int(get("resize_shorter")),
                crop=int(get("crop")),
                interpolation=get("interpolation"),
                mean=triple("mean"),
                std=triple("std"),
            )
        except ValueError as exc:
            raise ValueError(f"bad preprocessing parameters: {exc}") from exc


@dataclass(frozen=True)
class ArchSpec:
    """The shape of a ResNeXt network."""

    layers: tuple[int, int, int, int]
    groups: int
    width_per_group: int
    expansion: int = 4

    @property
    def feature_dim(self) -> int:
        """The width of the pooled features before ``fc`` (the last stage's output channels)."""
        return 512 * self.expansion


ARCHS: dict[str, ArchSpec] = {
    # NVIDIA's ResNeXt101-32x4d (torch.hub nvidia_resneXt): bottleneck widths 128..1024.
    "resnext101_32x4d": ArchSpec(layers=(3, 4, 23, 3), groups=32, width_per_group=4),
    # torchvision's ResNeXt builders.
    "resnext50_32x4d": ArchSpec(layers=(3, 4, 6, 3), groups=32, width_per_group=4),
    "resnext101_32x8d": ArchSpec(layers=(3, 4, 23, 3), groups=32, width_per_group=8),
    "resnext101_64x4d": ArchSpec(layers=(3, 4, 23, 3), groups=64, width_per_group=4),
}
DEFAULT_VARIANT = "resnext101_32x4d"


@dataclass(frozen=True)
class ModelSpec:
    """Everything the exporter, the config writer and the client must agree on."""

    variant: str = DEFAULT_VARIANT
    num_classes: int = 1000
    labels_path: Path | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    features_name: str = FEATURES_NAME
    channels: int = 3
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        if self.variant not in ARCHS:
            raise ValueError(f"unknown variant {self.variant!r}; choose from {', '.join(sorted(ARCHS))}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if self.num_classes != 1000 and self.labels_path is None:
            raise ValueError("a model with num_classes != 1000 needs its own label file (--labels)")

    @property
    def arch(self) -> ArchSpec:
        """The network shape of this variant."""
        return ARCHS[self.variant]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The input shape without the batch dimension (C, H, W)."""
        size = self.preprocessing.crop
        return (self.channels, size, size)

    @property
    def feature_dim(self) -> int:
        """The width of the features output (2048 for every ResNeXt variant here)."""
        return self.arch.feature_dim

    def model_name(self, fmt: Format) -> str:
        """The Triton model name for a format, e.g. ``resnext101_32x4d_onnx``."""
        return f"{self.variant}_{fmt.model_suffix}"

    def labels(self) -> list[str]:
        """The class labels, one per output index.

        Raises:
            ValueError: if the label file does not hold exactly ``num_classes`` lines.
        """
        if self.labels_path is None:
            text = resources.files("resnext_triton.data").joinpath(IMAGENET_LABELS).read_text("utf-8")
            source = IMAGENET_LABELS
        else:
            text = Path(self.labels_path).read_text("utf-8")
            source = str(self.labels_path)
        labels = [line.strip() for line in text.splitlines() if line.strip()]
        if len(labels) != self.num_classes:
            raise ValueError(f"{source} has {len(labels)} labels, the model has {self.num_classes} classes")
        return labels

    def labels_digest(self) -> str:
        """:func:`labels_digest` of :meth:`labels`.

        Raises:
            ValueError: as :meth:`labels`.
        """
        return labels_digest(self.labels())

    def with_(self, **changes: object) -> ModelSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def labels_digest(labels: Sequence[str]) -> str:
    """The sha256 of a label list as the repository's ``labels.txt`` holds it (one label per line).

    Written into every classifier's config (:data:`LABELS_DIGEST_PARAMETER`), it tells a client
    whether its own label list is the served model's without fetching the served one.
    """
    return hashlib.sha256(("\n".join(labels) + "\n").encode("utf-8")).hexdigest()
