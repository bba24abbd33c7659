"""The export image's pieces that run without Docker: its dependency plan and the plan check."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from resnext_triton.exporters.plan_check import Target, main, plan_mismatch

ROOT = Path(__file__).resolve().parent.parent


def _install_deps():
    spec = importlib.util.spec_from_file_location("install_deps", ROOT / "export" / "install_deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_plan_keeps_the_images_torch_and_stack():
    """Findings 1-3: no second torch, the image's packages stay, missing ones come at the project's pins."""
    deps = _install_deps()
    requirements = deps.export_requirements(ROOT / "pyproject.toml")
    assert any(r.startswith("torch==") for r in requirements)  # the CPU pin the image must not get
    image = {"torch": "2.7.0a0+ecf3bae40a.nv25.2", "numpy": "1.26.4", "onnx": "1.17.0", "tensorrt": "10.8.0.43",
             "nvidia-cudnn-cu12": "9.7.1", "pillow": "11.1.0", "protobuf": "4.24.4"}
    install, kept, constraints = deps.plan(requirements, image)
    names = {deps.requirement_name(r) for r in install}
    assert "torch" not in names and "onnx" not in names and "numpy" not in names and "pillow" not in names
    assert {"onnxruntime", "onnxscript", "tritonclient", "safetensors"} <= names
    assert all("==" in r for r in install if deps.requirement_name(r) in {"onnxruntime", "onnxscript"})
    assert any(line.startswith("torch: the image's 2.7.0a0") for line in kept)
    assert "torch==2.7.0a0+ecf3bae40a.nv25.2" in constraints and "tensorrt==10.8.0.43" in constraints
    assert "numpy==1.26.4" in constraints and "nvidia-cudnn-cu12==9.7.1" in constraints
    assert not any(c.startswith("protobuf") for c in constraints)  # not part of the stack: may move


def test_install_deps_dry_run_prints_the_pip_command():
    script = ROOT / "export" / "install_deps.py"
    result = subprocess.run(
        [sys.executable, str(script), "--dry-run", "--pyproject", str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "keeping torch: the image's" in result.stdout  # torch is installed here, so it is kept
    commands = [line for line in result.stdout.splitlines() if " -m pip install " in line]
    assert all("torch==" not in line for line in commands)


def _plan(repo: Path, version: int, trt: str, cc: str, model: str = "resnext101_32x4d_tensorrt_fp16") -> None:
    vdir = repo / model / str(version)
    vdir.mkdir(parents=True)
    (vdir / "model.plan").write_bytes(b"plan")
    manifest = {"format": "tensorrt", "export": {"tensorrt_version": trt, "compute_capability": cc}}
    (vdir / "export_manifest.json").write_text(json.dumps(manifest))


def test_plan_check_skips_only_on_a_matching_plan(tmp_path, capsys):
    """Finding 5: a plan from another TensorRT or GPU means export again, not skip."""
    here = Target("10.8.0.43", "9.0")
    assert plan_mismatch(tmp_path, here) == f"no TensorRT plan in {tmp_path}"
    _plan(tmp_path, 1, "10.3.0.26", "9.0")
    assert "built by TensorRT 10.3.0.26" in plan_mismatch(tmp_path, here)
    _plan(tmp_path, 2, "10.8.0.43", "8.0")
    assert "compute capability 8.0" in plan_mismatch(tmp_path, here)  # the newest version counts
    _plan(tmp_path, 3, "10.8.0.43", "9.0")
    assert plan_mismatch(tmp_path, here) is None
    args = ["--repo", str(tmp_path), "--tensorrt-version", "10.8.0.43", "--compute-capability"]
    assert main([*args, "9.0"]) == 0
    assert main([*args, "8.9"]) == 1 and "export needed" in capsys.readouterr().out
    (tmp_path / "resnext101_32x4d_tensorrt_fp16" / "3" / "export_manifest.json").write_text("{not json")
    assert main([*args, "9.0"]) == 1


def test_plan_check_reads_every_plan_and_asks_for_every_unexported_model(tmp_path):
    """A config without a version stops Triton at start ("at least one version must be available")."""
    here = Target("10.8.0.43", "9.0")
    _plan(tmp_path, 1, "10.8.0.43", "9.0")
    (tmp_path / "resnext101_32x4d_tensorrt_fp16_image" / "1").mkdir(parents=True)  # a pipeline: no manifest
    (tmp_path / "resnext101_32x4d_tensorrt_fp16_image" / "config.pbtxt").write_text("")
    assert plan_mismatch(tmp_path, here) is None
    _plan(tmp_path, 1, "10.3.0.26", "9.0", model="resnext101_32x4d_tensorrt_int8")
    assert "resnext101_32x4d_tensorrt_int8/1 was built by TensorRT 10.3.0.26" in plan_mismatch(tmp_path, here)
    _plan(tmp_path, 2, "10.8.0.43", "9.0", model="resnext101_32x4d_tensorrt_int8")
    (tmp_path / "resnext101_32x4d_onnx_int8").mkdir()
    (tmp_path / "resnext101_32x4d_onnx_int8" / "config.pbtxt").write_text("")
    assert plan_mismatch(tmp_path, here) == "resnext101_32x4d_onnx_int8 has no exported version"


def test_plan_check_without_tensorrt_asks_for_an_export(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: this checks a host without TensorRT or a GPU")
    assert main(["--repo", str(tmp_path)]) == 1
    assert "cannot check plans" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--repo", str(tmp_path), "--tensorrt-version", "10.8"])
    assert exc.value.code == 2
