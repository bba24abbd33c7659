"""ResNeXt definitions with NVIDIA's parameter names.

NVIDIA's ResNeXt101-32x4d (DeepLearningExamples, PyTorch/Classification/ConvNets) is a ResNet v1.5
bottleneck network: the stride sits on the grouped 3x3 convolution. Parameters are named
``conv1``/``bn1`` (stem), ``layers.{stage}.{block}.conv1..bn3`` and ``...downsample.{0,1}``, and
``fc``. The torchvision variants share the structure; :mod:`resnext_triton.weights` maps their
``layerN.`` names onto these.

Every exported artifact has two outputs: the logits and the pooled features before ``fc`` (the
image embedding, :attr:`resnext_triton.spec.ModelSpec.feature_dim` wide). :class:`WithFeatures`
is the module the exporters trace; the network's own ``forward`` returns the logits alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resnext_triton.spec import ArchSpec, ModelSpec

STAGE_PLANES = (64, 128, 256, 512)


class Bottleneck(nn.Module):
    """1x1 reduce, grouped 3x3 (carries the stride), 1x1 expand, plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, arch: ArchSpec, stride: int, downsample: nn.Module | None):
        super().__init__()
        width = int(planes * arch.width_per_group / 64) * arch.groups
        out = planes * arch.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=arch.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One bottleneck block."""
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNeXt(nn.Module):
    """A ResNeXt image classifier taking normalized NCHW float input and returning logits."""

    def __init__(self, arch: ArchSpec, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages: list[nn.Module] = []
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip(STAGE_PLANES, arch.layers, strict=True)):
            stride = 1 if index == 0 else 2
            out = planes * arch.expansion
            downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            stage = [Bottleneck(inplanes, planes, arch, stride, downsample)]
            stage += [Bottleneck(out, planes, arch, 1, None) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
            inplanes = out
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images (N, 3, H, W) to the globally pooled features before ``fc`` (N, 2048)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images (N, 3, H, W) to logits (N, num_classes)."""
        return self.fc(self.features(x))


class WithFeatures(nn.Module):
    """A classifier with both outputs: ``(logits, features)``, the order of ``OUTPUT__0``, ``FEATURES__1``.

    The features are computed once; the logits are ``fc`` of them, so asking for both costs nothing
    beyond the logits. This is what the exporters trace and the eager reference runs.

    Args:
        model: a network with ``features(x)`` and an ``fc`` head (:class:`ResNeXt`).

    Raises:
        TypeError: if the model lacks either.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not callable(getattr(model, "features", None)) or not isinstance(getattr(model, "fc", None), nn.Module):
            raise TypeError(f"{type(model).__name__} has no features() and fc head to export features from")
        self.model: Any = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized images (N, 3, H, W) to (logits (N, num_classes), features (N, feature width))."""
        features = self.model.features(x)
        return self.model.fc(features), features


def build_model(spec: ModelSpec) -> ResNeXt:
    """Build the (randomly initialized) network for a spec, in eval mode."""
    return ResNeXt(spec.arch, spec.num_classes).eval()


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())


def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, *, batch_size: int = 8) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on real images; the model ends in eval mode.

    Untrained (random) weights with BatchNorm's default statistics give logits that barely depend
    on the input, so top-1 on them is a coin toss among near-ties. Statistics measured on real
    photos (and their mirror images) normalize each layer properly: the outputs then depend on
    the input, and accuracy and agreement figures on such a model mean something. Only the
    running statistics change; no weight does.

    Args:
        model: the network (changed in place).
        images: preprocessed images, float32 (N, C, H, W).
        batch_size: images per forward pass.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch
    data = torch.cat([images, torch.flip(images, dims=[3])])
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                model(data[start : start + batch_size])
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return model
