import pytest
import torch
from torch import nn

from resnext_triton.model import WithFeatures, build_model, count_parameters
from resnext_triton.spec import ModelSpec

# torchvision's published parameter counts for its builders, and NVIDIA's for 101-32x4d.
PARAMS = {
    "resnext101_32x4d": 44_177_704,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
}


@pytest.mark.parametrize("variant", sorted(PARAMS))
def test_parameter_count(variant):
    assert count_parameters(build_model(ModelSpec(variant=variant))) == PARAMS[variant]


def test_nvidia_names_and_structure():
    model = build_model(ModelSpec())
    names = set(model.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layers.0.0.conv1.weight", "layers.0.0.downsample.0.weight",
                "layers.0.0.downsample.1.running_mean", "layers.2.22.bn3.weight", "layers.3.2.conv3.weight",
                "fc.weight", "fc.bias"):
        assert key in names
    assert not any(k.startswith("layer1.") for k in names)
    assert [len(stage) for stage in model.layers] == [3, 4, 23, 3]
    block = model.layers[1][0]
    # ResNet v1.5: the stride sits on the grouped 3x3 convolution, not the 1x1.
    assert block.conv1.stride == (1, 1)
    assert block.conv2.stride == (2, 2)
    assert block.conv2.groups == 32
    assert block.conv2.in_channels == 256  # bottleneck width 256 in stage 2 (32 groups x 8)
    assert model.layers[3][2].conv3.out_channels == 2048


def test_forward_shape_and_num_classes():
    model = build_model(ModelSpec(variant="resnext50_32x4d", num_classes=7, labels_path="unused.txt"))
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", sorted(PARAMS))
def test_every_variant_has_2048_features_before_fc(variant):
    spec = ModelSpec(variant=variant)
    model = build_model(spec)
    assert spec.feature_dim == model.fc.in_features == 2048


def test_with_features_returns_the_logits_and_the_features_they_come_from():
    torch.manual_seed(0)
    model = build_model(ModelSpec(variant="resnext50_32x4d", num_classes=7, labels_path="unused.txt"))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        logits, features = WithFeatures(model).eval()(x)
        alone = model(x)
        pooled = model.avgpool(model.layers(model.maxpool(model.relu(model.bn1(model.conv1(x)))))).flatten(1)
        head = model.fc(features)
    assert logits.shape == (2, 7) and features.shape == (2, 2048)
    torch.testing.assert_close(logits, alone)  # forward is fc(features)
    torch.testing.assert_close(features, pooled)  # the global average pool, before fc
    torch.testing.assert_close(logits, head)
    assert (features >= 0).all()  # pooled after ReLU


def test_with_features_needs_a_features_method_and_an_fc_head():
    with pytest.raises(TypeError, match="no features"):
        WithFeatures(nn.Linear(3, 2))
