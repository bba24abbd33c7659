"""The runner family on a toy model: every artifact runner computes what the eager model computes."""

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

from resnext_triton.exporters.onnx2trt import tensorrt_available
from resnext_triton.runners import (
    EagerRunner,
    OnnxRuntimeRunner,
    Runner,
    TorchScriptRunner,
    load_runner,
)
from resnext_triton.spec import Format, ModelSpec, Preprocessing

SPEC = ModelSpec(preprocessing=Preprocessing(resize_shorter=16, crop=16))


class Toy(nn.Module):
    """Conv, BN, ReLU, pool, linear: the op kinds of the real network, a few hundred weights."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


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


def test_eager_runner_is_the_model_in_fp32(artifacts: Artifacts) -> None:
    runner = EagerRunner(artifacts.model)
    out = runner(_batch())
    with torch.no_grad():
        expected = artifacts.model(torch.from_numpy(_batch())).numpy()
    assert isinstance(runner, Runner) and runner.name == "eager" and runner.device == "cpu"
    assert out.dtype == np.float32 and out.shape == (3, 5)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("fmt", "cls"), [(Format.TORCHSCRIPT, TorchScriptRunner), (Format.ONNX, OnnxRuntimeRunner)])
def test_artifact_runners_match_eager(artifacts: Artifacts, fmt: Format, cls: type[Runner]) -> None:
    reference = EagerRunner(artifacts.model)(_batch())
    path = artifacts.torchscript if fmt is Format.TORCHSCRIPT else artifacts.onnx
    with closing(load_runner(fmt, path, spec=SPEC)) as runner:
        assert type(runner) is cls and runner.name == fmt.value
        for n in (1, 3):  # the batch axis is dynamic
            out = runner(_batch(n))
            assert out.dtype == np.float32 and out.shape == (n, 5)
        np.testing.assert_allclose(runner(_batch()), reference, rtol=0, atol=1e-5)


def test_torchscript_runner_feeds_a_frozen_fp16_module_half_precision(artifacts: Artifacts, tmp_path: Path) -> None:
    from resnext_triton.exporters.torch2torchscript import export_torchscript

    path = export_torchscript(artifacts.model, SPEC, tmp_path / "model.pt", fp16=True)  # frozen: no parameters
    runner = TorchScriptRunner(path)
    out = runner(_batch())
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, EagerRunner(artifacts.model)(_batch()), rtol=0, atol=1e-2)


def test_load_runner_takes_format_names_and_runner_options(artifacts: Artifacts) -> None:
    runner = load_runner("onnx", artifacts.onnx, intra_op_threads=1)
    assert isinstance(runner, OnnxRuntimeRunner) and runner.device == "cpu"
    assert runner(_batch(2)).shape == (2, 5)
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
