"""INT8 validation criteria (SQNR, top-1 beyond the noise) and the calibration options, without a model."""

from __future__ import annotations

import numpy as np
import pytest

from resnext_triton.exporters import ExportError
from resnext_triton.exporters.cli import calibration_image_files
from resnext_triton.exporters.onnx2int8 import quantize_onnx
from resnext_triton.exporters.validate import MIN_SQNR_DB, TOLERANCES, compare
from resnext_triton.spec import Format, ModelSpec


def _logits(n: int = 6, classes: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, classes))
    logits[:, 0] += 8.0  # clear winners: margins far above the noise
    return logits.astype(np.float32)


def _check(reference: np.ndarray, candidate: np.ndarray):
    """compare() on fixed logits: each runner hands out its rows in call order."""
    photos = np.zeros((len(reference), 1), dtype=np.float32)

    def runner(outputs: np.ndarray):
        done = 0

        def run(batch: np.ndarray) -> np.ndarray:
            nonlocal done
            done += len(batch)
            return outputs[done - len(batch) : done]

        return run

    return compare("onnx_int8", "int8", runner(reference), runner(candidate), photos, photos[:0], TOLERANCES["int8"])


def test_small_quantization_noise_passes_and_is_recorded():
    ref = _logits()
    report = _check(ref, ref + np.random.default_rng(1).normal(0, 0.01, ref.shape).astype(np.float32))
    assert report.ok, report.failures
    assert report.extra["sqnr_db"] > MIN_SQNR_DB and report.extra["top1_held"] == 6
    assert report.describe()["sqnr_db"] == report.extra["sqnr_db"]


def test_low_sqnr_fails():
    ref = _logits()
    report = _check(ref, ref + np.random.default_rng(2).normal(0, 2.0, ref.shape).astype(np.float32))
    assert not report.ok and any("SQNR" in f for f in report.failures)


def test_top1_flip_beyond_the_noise_fails_but_a_near_tie_may_flip():
    ref = _logits()
    flipped = ref.copy()
    flipped[0, 0], flipped[0, 1] = ref[0, 1], ref[0, 0]  # a clear winner loses: not quantization noise
    report = _check(ref, flipped)
    assert any("top-1 differs" in f for f in report.failures)
    tie = _logits()
    tie[1, 1] = tie[1, 0] - 1e-4  # a near-tie: its margin is within the noise
    noisy = tie + np.random.default_rng(3).normal(0, 0.01, tie.shape).astype(np.float32)
    noisy[1, 0], noisy[1, 1] = tie[1, 1], tie[1, 0]
    report = _check(tie, noisy)
    assert report.ok, report.failures
    assert report.extra["top1_held"] == 5 and report.extra["top1_flipped_within_noise"] == 1


def test_calibration_folder_is_checked(tmp_path):
    assert calibration_image_files(None) == ()
    with pytest.raises(ExportError, match="not a directory"):
        calibration_image_files(tmp_path / "missing")
    with pytest.raises(ExportError, match="no image files"):
        calibration_image_files(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.PNG").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in calibration_image_files(tmp_path)] == ["a.jpg", "b.PNG"]


def test_quantizer_refuses_bad_requests(tmp_path):
    spec = ModelSpec()
    with pytest.raises(ExportError, match="unknown calibration method"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", spec, np.zeros((1, 3, 224, 224)), method="magic")
    with pytest.raises(ExportError, match="at least one calibration image"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", spec, np.zeros((0, 3, 224, 224)))


def test_int8_format_is_an_onnx_file_served_on_cpu_instances():
    from resnext_triton.triton.config import ServingOptions, build_config

    assert Format.ONNX_INT8.filename == "model.onnx" and ModelSpec().model_name(Format.ONNX_INT8).endswith("_onnx_int8")
    gpu = build_config(ModelSpec(), Format.ONNX_INT8, ServingOptions())
    assert gpu.backend == "onnxruntime" and gpu.instance_group[0].kind == gpu.instance_group[0].KIND_CPU


def _tiny_classifier(path) -> None:
    """A small ONNX classifier with the spec's tensor names: conv, grouped conv, residual add, pool, fc.

    Any image size goes in (the pool averages it away), 16x16 to keep the tests quick, 224 for the bench.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    spec = ModelSpec()
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=2),
        helper.make_node("Add", ["r1", "c2"], ["a"]),
        helper.make_node("Relu", ["a"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], [spec.features_name]),
        helper.make_node("Gemm", [spec.features_name, "w3", "b3"], [spec.output_name], transB=1),
    ]
    nodes[0].input[0] = spec.input_name
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(spec.input_name, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info(spec.features_name, TensorProto.FLOAT, ["N", 8])],
        [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 4, 3, 3), weight("b2", 8),
         weight("w3", 10, 8), weight("b3", 10)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_each_int8_target_gets_the_integer_types_its_runtime_takes(tmp_path, target):
    """CPU: U8 activations with zero points (ONNX Runtime's VNNI kernels). TensorRT: symmetric S8 only."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    spec = ModelSpec()
    _tiny_classifier(tmp_path / "fp32.onnx")
    images = np.random.default_rng(1).random((8, 3, 16, 16), dtype=np.float32)
    details = quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", spec, images, target=target)
    assert details["int8_target"] == target and details["calibration_images"] == 8
    model = onnx.load(str(tmp_path / "int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    activations = {p.dtype for p in points if p.ndim == 0}
    assert points and activations == ({np.dtype(np.int8)} if target == "tensorrt" else {np.dtype(np.uint8)})
    dequantized = [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    int32_dequantized = [name for name in dequantized if inits[name].dtype == np.int32]
    # INT32 biases: ONNX Runtime's CPU kernels take them, TensorRT's parser refuses them
    assert bool(int32_dequantized) == (target == "cpu"), int32_dequantized
    if target == "tensorrt":
        assert all(not p.any() for p in points)  # zero point 0 everywhere: symmetric
        quantizes = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
        assert {"w1", "w2"} <= quantizes  # FP32 weights with their own Q/DQ pair
    else:
        assert any(p.any() for p in points)  # asymmetric: U8 activations use their zero points
    outputs = [spec.output_name, spec.features_name]
    ref = ort.InferenceSession(str(tmp_path / "fp32.onnx")).run(outputs, {spec.input_name: images})
    got = ort.InferenceSession(str(tmp_path / "int8.onnx")).run(outputs, {spec.input_name: images})
    assert [g.shape for g in got] == [(8, 10), (8, 8)]
    noise = float(np.mean((got[0] - ref[0]) ** 2))
    assert noise > 0 and 10 * np.log10(float(np.mean(ref[0] ** 2)) / noise) > 25  # INT8, and close to FP32


def test_quantizer_refuses_an_unknown_target(tmp_path):
    with pytest.raises(ExportError, match="unknown INT8 target 'npu'"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", ModelSpec(), np.zeros((1, 3, 8, 8)), target="npu")


def test_int8_recipes_bench_compares_targets_and_methods_with_fp32(tmp_path, capsys):
    """bench/int8_recipes.py on a tiny ONNX model in a repository layout: every recipe timed and compared."""
    import json

    from resnext_triton.bench.int8_recipes import main

    version = tmp_path / "repo" / ModelSpec().model_name(Format.ONNX) / "1"
    version.mkdir(parents=True)
    _tiny_classifier(version / "model.onnx")
    out = tmp_path / "out"
    argv = ["--repo", str(tmp_path / "repo"), "--recipes", "cpu:minmax,tensorrt:percentile", "-b", "1,2",
            "--images", "2", "--out", str(out)]
    assert main(argv) == 0
    (run_dir,) = out.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    rows = results["rows"]
    assert list(rows) == ["fp32", "cpu:minmax", "tensorrt:percentile"]
    for name in ("cpu:minmax", "tensorrt:percentile"):
        assert set(rows[name]["img_per_s"]) == {"1", "2"} and all(v > 0 for v in rows[name]["img_per_s"].values())
        assert 20 < rows[name]["sqnr_db"] < 80 and 0 <= rows[name]["top1_agreement"] <= 1
    assert "| tensorrt:percentile |" in (run_dir / "summary.md").read_text()
    assert results["in_sample"] and "in sample" in (run_dir / "summary.md").read_text()
    with pytest.raises(SystemExit) as exc:
        main([*argv[:2], "--recipes", "gpu:minmax"])
    assert exc.value.code == 2 and "bad recipe 'gpu:minmax'" in capsys.readouterr().err
    assert main(["--repo", str(tmp_path / "empty"), "--out", str(out)]) == 1
    assert "has no exported resnext101_32x4d_onnx" in capsys.readouterr().err


def test_entropy_calibration_searches_its_own_ranges(tmp_path):
    """ONNX Runtime's defaults would give entropy the min-max ranges; ours clips some of them."""
    import onnx
    from onnx import numpy_helper

    _tiny_classifier(tmp_path / "fp32.onnx")
    images = np.random.default_rng(2).standard_normal((8, 3, 16, 16)).astype(np.float32)

    def activation_scales(method: str) -> dict[str, float]:
        out = tmp_path / f"{method}.onnx"
        quantize_onnx(tmp_path / "fp32.onnx", out, ModelSpec(), images, method=method)
        model = onnx.load(str(out))
        scales = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_scale")}
        return {name: float(value) for name, value in scales.items() if value.ndim == 0}

    minmax, entropy = activation_scales("minmax"), activation_scales("entropy")
    assert minmax.keys() == entropy.keys() and len(minmax) >= 5
    clipped = [name for name in minmax if entropy[name] < 0.99 * minmax[name]]
    assert clipped, (minmax, entropy)
    assert all(entropy[name] <= minmax[name] * 1.01 for name in minmax)
