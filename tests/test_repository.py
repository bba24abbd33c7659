import json
import os
import subprocess
import sys

import pytest

from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.config import ServingOptions
from resnext_triton.triton.repository import (
    MANIFEST,
    publish_version,
    read_manifest,
    servable_models,
    versions,
    write_configs,
)


def _fill(payload):
    def fill(staging):
        (staging / "model.onnx").write_bytes(payload)
        return {"payload": payload.decode()}

    return fill


def test_versions_increment_and_keep(tmp_path):
    model_dir = tmp_path / "m"
    for i in range(4):
        publish_version(model_dir, _fill(f"v{i}".encode()), keep=2)
    assert versions(model_dir) == [3, 4]
    assert (model_dir / "4" / "model.onnx").read_bytes() == b"v3"
    assert read_manifest(model_dir / "4") == {"payload": "v3"}
    publish_version(model_dir, _fill(b"v4"), keep=0)
    assert versions(model_dir) == [3, 4, 5]


def test_failed_fill_publishes_nothing(tmp_path):
    model_dir = tmp_path / "m"
    publish_version(model_dir, _fill(b"good"))

    def broken(staging):
        (staging / "model.onnx").write_bytes(b"half")
        raise RuntimeError("validation failed")

    with pytest.raises(RuntimeError, match="validation failed"):
        publish_version(model_dir, broken)
    assert versions(model_dir) == [1]
    assert sorted(p.name for p in model_dir.iterdir()) == ["1"]


def test_killed_export_leaves_no_loadable_version(tmp_path):
    """A process killed mid-write leaves only a hidden staging dir, which the next export removes."""
    model_dir = tmp_path / "m"
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    code = "\n".join([
        f"import os, sys; sys.path.insert(0, {src!r})",
        "from pathlib import Path",
        "from resnext_triton.triton.repository import publish_version",
        "def fill(d):",
        "    (d / 'model.onnx').write_bytes(b'partial')",
        "    os._exit(9)",
        f"publish_version(Path({str(model_dir)!r}), fill)",
    ])
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9
    leftovers = list(model_dir.iterdir())
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    assert versions(model_dir) == []
    publish_version(model_dir, _fill(b"next"))
    assert sorted(p.name for p in model_dir.iterdir()) == ["1"]


def test_manifest_is_json_beside_the_model(tmp_path):
    version = publish_version(tmp_path / "m", _fill(b"x"))
    assert json.loads((version / MANIFEST).read_text()) == {"payload": "x"}


def test_servable_models_on_cpu(tmp_path):
    spec = ModelSpec()
    for fmt in Format:
        model_dir = write_configs(tmp_path, spec, fmt, ServingOptions())
        if fmt is not Format.TORCHSCRIPT:
            publish_version(model_dir, _fill(b"x"))
    load, skipped = servable_models(tmp_path, cpu=True)
    # the exported classifiers, their image pipelines, and the preprocessing step they share
    assert load == [
        "resnext101_32x4d_onnx",
        "resnext101_32x4d_onnx_image",
        "resnext101_32x4d_onnx_int8",
        "resnext101_32x4d_onnx_int8_image",
        "resnext101_32x4d_preprocess",
    ]
    assert "TensorRT" in skipped["resnext101_32x4d_tensorrt_fp16"]
    assert "TensorRT" in skipped["resnext101_32x4d_tensorrt_int8"]
    assert "no exported version" in skipped["resnext101_32x4d_torchscript"]
    assert "resnext101_32x4d_torchscript" in skipped["resnext101_32x4d_torchscript_image"]  # nothing to front
    load_gpu, _ = servable_models(tmp_path, cpu=False)
    assert [n for n in load_gpu if not n.endswith(("_image", "_preprocess"))] == [
        "resnext101_32x4d_onnx", "resnext101_32x4d_onnx_int8", "resnext101_32x4d_tensorrt_fp16",
        "resnext101_32x4d_tensorrt_int8"]
    assert "resnext101_32x4d_tensorrt_fp16_image" in load_gpu
