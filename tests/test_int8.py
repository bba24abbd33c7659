"""INT8 validation criteria (SQNR, top-1 beyond the noise) and the calibration options, without a model."""

from __future__ import annotations

import numpy as np
import pytest

from resnext_triton.exporters import ExportError
from resnext_triton.exporters.cli import _calibration_images
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
    assert _calibration_images(None) == ()
    with pytest.raises(ExportError, match="not a directory"):
        _calibration_images(tmp_path / "missing")
    with pytest.raises(ExportError, match="no image files"):
        _calibration_images(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.PNG").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in _calibration_images(tmp_path)] == ["a.jpg", "b.PNG"]


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
