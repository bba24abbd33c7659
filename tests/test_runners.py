"""The runner family on a toy model: every artifact runner computes what the eager model computes, both outputs."""

from __future__ import annotations

import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnext_triton.exporters import ExportError
from resnext_triton.exporters.onnx2trt import tensorrt_available
from resnext_triton.runners import (
    EagerRunner,
    OnnxRuntimeRunner,
    Outputs,
    Runner,
    TorchScriptRunner,
    load_runner,
)
from resnext_triton.spec import Format, ModelSpec, Preprocessing

CLASSES = 5
SPEC = ModelSpec(num_classes=CLASSES, labels_path=Path("unused.txt"), preprocessing=Preprocessing(16, 16))
WIDTH = SPEC.feature_dim  # 2048, like every ResNeXt here


class Toy(nn.Module):
    """Conv, BN, ReLU, pool, linear: the op kinds of the real network, with its features() and fc head."""

    def __init__(self, classes: int = CLASSES):
        super().__init__()
        self.conv = nn.Conv2d(3, WIDTH, 3, padding=1)
        self.bn = nn.BatchNorm2d(WIDTH)
        self.fc = nn.Linear(WIDTH, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@dataclass
class Artifacts:
    model: nn.Module
    torchscript: Path
    onnx: Path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    from resnext_triton.exporters.torch2onnx import export_onnx
    from resnext_triton.exporters.torch2torchscript import export_torchscript

    torch.manual_seed(0)
    model = Toy().eval()
    out = tmp_path_factory.mktemp("toy")
    return Artifacts(
        model=model,
        torchscript=export_torchscript(model, SPEC, out / "model.pt"),
        onnx=export_onnx(model, SPEC, out / "model.onnx"),
    )


def _batch(n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, *SPEC.input_shape)).astype(np.float32)


def test_eager_runner_is_the_model_in_fp32_with_its_features(artifacts: Artifacts) -> None:
    runner = EagerRunner(artifacts.model)
    out = runner(_batch())
    both = runner.run(_batch())
    with torch.no_grad():
        expected = artifacts.model(torch.from_numpy(_batch())).numpy()
        features = artifacts.model.features(torch.from_numpy(_batch())).numpy()
    assert isinstance(runner, Runner) and runner.name == "eager" and runner.device == "cpu"
    assert out.dtype == np.float32 and out.shape == (3, CLASSES)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    assert isinstance(both, Outputs) and both.features is not None
    assert both.features.dtype == np.float32 and both.features.shape == (3, WIDTH)
    np.testing.assert_allclose(both.features, features, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(both.logits, out)


def test_eager_runner_of_a_module_without_features_gives_its_output_alone() -> None:
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, CLASSES)).eval()
    outputs = EagerRunner(plain).run(_batch(2))
    assert outputs.logits.shape == (2, CLASSES) and outputs.features is None


@pytest.mark.parametrize(("fmt", "cls"), [(Format.TORCHSCRIPT, TorchScriptRunner), (Format.ONNX, OnnxRuntimeRunner)])
def test_artifact_runners_match_eager(artifacts: Artifacts, fmt: Format, cls: type[Runner]) -> None:
    reference = EagerRunner(artifacts.model).run(_batch())
    path = artifacts.torchscript if fmt is Format.TORCHSCRIPT else artifacts.onnx
    with closing(load_runner(fmt, path, spec=SPEC)) as runner:
        assert type(runner) is cls and runner.name == fmt.value
        for n in (1, 3):  # the batch axis is dynamic
            out = runner(_batch(n))
            assert out.dtype == np.float32 and out.shape == (n, CLASSES)
        both = runner.run(_batch())
        assert both.features is not None and both.features.shape == (3, WIDTH)
        np.testing.assert_allclose(runner(_batch()), reference.logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(both.features, reference.features, rtol=0, atol=1e-5)


def test_exporters_refuse_a_model_without_features(tmp_path: Path) -> None:
    from resnext_triton.exporters.torch2onnx import export_onnx
    from resnext_triton.exporters.torch2torchscript import export_torchscript

    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, CLASSES)).eval()
    with pytest.raises(ExportError, match="no features"):
        export_torchscript(plain, SPEC, tmp_path / "model.pt")
    with pytest.raises(ExportError, match="no features"):
        export_onnx(plain, SPEC, tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())


def test_torchscript_export_checks_the_spec_widths(artifacts: Artifacts, tmp_path: Path) -> None:
    from resnext_triton.exporters.torch2torchscript import export_torchscript

    wrong = SPEC.with_(num_classes=7)
    with pytest.raises(ExportError, match=r"returns \[\(2, 5\), \(2, 2048\)\], expected .*\(2, 7\)"):
        export_torchscript(artifacts.model, wrong, tmp_path / "model.pt")


def test_torchscript_runner_feeds_a_frozen_fp16_module_half_precision(artifacts: Artifacts, tmp_path: Path) -> None:
    from resnext_triton.exporters.torch2torchscript import export_torchscript

    path = export_torchscript(artifacts.model, SPEC, tmp_path / "model.pt", fp16=True)  # frozen: no parameters
    runner = TorchScriptRunner(path)
    out = runner.run(_batch())
    reference = EagerRunner(artifacts.model).run(_batch())
    assert out.logits.dtype == np.float32 and out.features is not None and out.features.dtype == np.float32
    np.testing.assert_allclose(out.logits, reference.logits, rtol=0, atol=1e-2)
    np.testing.assert_allclose(out.features, reference.features, rtol=0, atol=1e-2)


def test_load_runner_takes_format_names_and_runner_options(artifacts: Artifacts) -> None:
    runner = load_runner("onnx", artifacts.onnx, intra_op_threads=1)
    assert isinstance(runner, OnnxRuntimeRunner) and runner.device == "cpu"
    assert runner(_batch(2)).shape == (2, CLASSES)
    runner.close()
    with pytest.raises(ValueError, match="tflite"):
        load_runner("tflite", artifacts.onnx)


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here; see tests/test_tensorrt.py")
def test_tensorrt_runner_without_tensorrt_names_the_route(tmp_path: Path) -> None:
    from resnext_triton.exporters import TensorRTUnavailable

    with pytest.raises(TensorRTUnavailable, match=r"TensorRT is not installed.*export/Dockerfile"):
        load_runner(Format.TENSORRT, tmp_path / "model.plan", spec=SPEC)


def test_importing_runners_imports_no_framework() -> None:
    code = (
        "import sys, resnext_triton.runners, resnext_triton.bench.baselines, resnext_triton.exporters.validate; "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_torchscript_runner_finds_the_half_precision_of_a_frozen_resnext(tmp_path: Path) -> None:
    """A frozen ResNeXt holds its FP16 weights as graph constants, and its printed graph never says 'Half'."""
    from resnext_triton.exporters.torch2torchscript import export_torchscript
    from resnext_triton.model import build_model

    spec = ModelSpec(variant="resnext50_32x4d", preprocessing=Preprocessing(32, 32))
    torch.manual_seed(0)
    model = build_model(spec)
    path = export_torchscript(model, spec, tmp_path / "model.pt", fp16=True)
    runner = TorchScriptRunner(path)
    assert "Half" not in str(runner._module.graph) and runner._dtype == torch.float16
    batch = np.random.default_rng(2).standard_normal((2, *spec.input_shape)).astype(np.float32)
    out, reference = runner.run(batch), EagerRunner(model).run(batch)
    assert out.features is not None and reference.features is not None
    assert np.max(np.abs(out.features - reference.features)) <= 5e-2 * np.abs(reference.features).max()


def test_torchscript_convolutions_never_use_tf32(artifacts: Artifacts) -> None:
    """The trace records each convolution's allow_tf32 (its last argument): an FP32 export stays FP32 on a GPU."""
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default, which would otherwise be baked in
    code = torch.jit.load(str(artifacts.torchscript)).code
    convolutions = [line.strip() for line in code.splitlines() if "torch._convolution(" in line]
    assert convolutions and all(line.endswith("False)") for line in convolutions), convolutions
