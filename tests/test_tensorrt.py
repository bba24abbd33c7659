"""TensorRT FP16 and INT8: build, validate and reload a plan. Runs only where TensorRT and a GPU exist."""

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt, pytest.mark.slow]


def _skip_reason():
    from resnext_triton.exporters.onnx2trt import tensorrt_available

    if not tensorrt_available():
        return "TensorRT is not installed (build plans in NVIDIA's container: docker compose run --rm export)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    return None


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_tensorrt_fp16_plan(tmp_path, photos):
    from resnext_triton.exporters.cli import main
    from resnext_triton.triton.repository import read_manifest

    code = main(["--weights", "random", "--formats", "onnx,tensorrt", "--device", "cuda", "--out", str(tmp_path),
                 "--max-batch-size", "8", "--no-progress"])
    assert code == 0
    version = tmp_path / "resnext101_32x4d_tensorrt_fp16" / "1"
    plan = (version / "model.plan").read_bytes()
    assert not plan.startswith(b"{")  # the raw engine, no metadata header
    manifest = read_manifest(version)
    assert manifest["export"]["fp16"] is True and manifest["export"]["max_batch"] == 8
    assert manifest["export"]["tensorrt_version"] and manifest["export"]["compute_capability"]
    assert manifest["validation"]["ok"] is True


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_tensorrt_int8_plan_from_a_symmetric_qdq_graph(tmp_path, photos):
    from resnext_triton.exporters.cli import main
    from resnext_triton.triton.repository import read_manifest

    # random weights: BatchNorm re-estimated on the photos, and the tests' INT8 bound (see conftest.py)
    code = main(["--weights", "random", "--recalibrate-bn", "--formats", "onnx,tensorrt_int8", "--device", "cuda",
                 "--int8-min-sqnr", "12", "--out", str(tmp_path), "--max-batch-size", "8", "--no-progress"])
    assert code == 0
    version = tmp_path / "resnext101_32x4d_tensorrt_int8" / "1"
    assert not (version / "model.plan").read_bytes().startswith(b"{")
    manifest = read_manifest(version)
    export = manifest["export"]
    assert export["int8"] is True and export["int8_target"] == "tensorrt" and export["max_batch"] == 8
    assert "symmetric S8 activations" in export["quantization"]
    assert manifest["validation"]["ok"] is True and manifest["validation"]["sqnr_db"] >= 12
