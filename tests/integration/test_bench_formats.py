"""Smoke test of bench/formats.py on a tiny setting against a real local Triton it starts itself.

It asserts on what the command writes (every point measured, the agreement table, the ratios),
never on speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--window-images", "4", "--min-requests", "2", "--stability-percentage", "100", "--max-trials", "10"]


def test_formats_tiny(exported_repo, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "formats.py"), "--repo", str(exported_repo.path), "-c", "2",
         "--client-images", "6", "--formats", "onnx,onnx_int8,torchscript", "-b", "2", "--in-process-images", "2",
         *TINY, "--out", str(out)],
        capture_output=True, text=True, timeout=1200, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    spec = exported_repo.spec
    for name in ("onnx", "onnx_image", "onnx_int8", "onnx_int8_image", "torchscript", "torchscript_image"):
        point = results["perf"][f"{spec.variant}_{name}"]
        assert point["error"] is None and point["throughput"] > 0, (name, point)
    agreement = results["agreement"]
    assert agreement[f"{spec.variant}_onnx"]["top1_agreement"] == 1.0
    assert agreement[f"{spec.variant}_onnx"]["max_abs_diff"] == 0.0
    assert agreement[f"{spec.variant}_torchscript"]["max_abs_diff"] <= 1e-3
    assert 0.0 < agreement[f"{spec.variant}_onnx_int8"]["sqnr_db"] < 60
    assert results["client"]["tensor"]["failed"] == [] and results["client"]["pipeline"]["failed"] == []
    assert results["wire_bytes"]["tensor"] == 3 * 224 * 224 * 4
    assert results["batch_size"] == 2
    local = results["in_process"]
    assert [(p["batch"], p["images"]) for p in local.values()] == [(2, 6), (2, 6)]  # at least 3 timed batches
    ratios = results["ratios"]
    assert ratios["int8_over_fp32_served"] > 0 and ratios["pipeline_over_tensor_served"] > 0
    assert ratios["int8_over_fp32_in_process"] == local[f"{spec.variant}_onnx_int8"]["throughput"] / local[
        f"{spec.variant}_onnx"]["throughput"]
    assert ratios["wire_bytes_tensor_over_pipeline"] > 1
    summary = (run_dir / "summary.md").read_text()
    assert "bench/formats.py" in summary and "| ratio | value |" in summary
    assert f"| {spec.variant}_onnx_int8 in process | FP32 tensors | 2 |" in summary
    assert f"| {spec.variant}_onnx_image | encoded files | 1 |" in summary
