"""Smoke tests of the benchmark commands on a tiny setting, against the real local Triton.

They keep ``bench/perf_sweep.py`` and ``bench/config_search.py`` working end to end (perf_analyzer,
the baselines, classify.py, the reports); they assert on what the commands write, never on speed.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from resnext_triton.spec import Format
from resnext_triton.triton.config import parse_pbtxt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# Tiny but real: 4 images per window, windows allowed to differ by up to 100 % (a busy 2-core host).
TINY = ["--window-images", "4", "--min-requests", "2", "--stability-percentage", "100", "--max-trials", "10"]


def _run(script: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _single_run_dir(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_perf_sweep_tiny(triton_server, tmp_path: Path) -> None:
    onnx = triton_server.models[Format.ONNX]
    proc = _run(
        "perf_sweep.py",
        "-u",
        f"grpc://{triton_server.grpc_url}",
        "-u",
        f"http://{triton_server.http_address}",
        "--repo",
        str(triton_server.repo),
        "--models",
        onnx,
        "-b",
        "1",
        "-c",
        "1",
        *TINY,
        "--baseline-batch",
        "1",
        "--baseline-images",
        "2",
        "--preprocess-images",
        "4",
        "--sgemm-size",
        "256",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = _single_run_dir(tmp_path)

    # raw perf_analyzer CSVs, one per protocol, with the latency percentiles
    for protocol in ("grpc", "http"):
        rows = list(csv.DictReader((run / "raw" / f"{onnx}_{protocol}_b1_c1.csv").open()))
        assert rows and float(rows[0]["Inferences/Second"]) > 0
        assert {"p50 latency", "p95 latency", "p99 latency"} <= rows[0].keys()
        assert "--measurement-mode count_windows" in (run / "raw" / f"{onnx}_{protocol}_b1_c1.log").read_text()

    data = json.loads((run / "results.json").read_text())
    assert {(p["protocol"], p["batch"], p["concurrency"]) for p in data["served"]} == {("grpc", 1, 1), ("http", 1, 1)}
    assert all(p["throughput"] > 0 and p["p95_ms"] > 0 and p["error"] is None for p in data["served"])
    names = {b["name"] for b in data["baselines"]}
    assert {
        "ONNX Runtime in-process",
        "TorchScript in-process",
        "torch.hub example (eager + PIL)",
        "classify.py end to end (grpc)",
    } <= names
    assert all(t["identical"] for t in data["preprocessing"])
    assert data["sgemm"]["gflops"] > 0
    ratios = {r["key"]: r for r in data["ratios"]}
    assert {"a/b1", "b", "c", "d"} <= ratios.keys()
    assert all(r["value"] is not None and r["value"] > 0 for r in ratios.values())
    assert data["machine"]["cores"] >= 1 and data["triton_version"]

    summary = (run / "summary.md").read_text()
    assert f"| {onnx} | grpc | default | 1 | 1 |" in summary and f"| {onnx} | http | default | 1 | 1 |" in summary
    assert "## Ratios" in summary and "python bench/perf_sweep.py -u grpc://" in summary
    png = (run / "throughput_vs_p95.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "ratios:" in proc.stdout and "(a/b1) Triton served / in-process ONNX Runtime" in proc.stdout


def test_config_search_tiny(exported_repo, tmp_path: Path) -> None:
    model = exported_repo.spec.model_name(Format.ONNX)
    source_cpu = exported_repo.path / model / "configs" / "cpu.pbtxt"
    before = source_cpu.read_text()
    scratch = tmp_path / "scratch"
    proc = _run(
        "config_search.py",
        "--repo",
        str(exported_repo.path),
        "--model",
        model,
        "--p95-budget-ms",
        "600000",
        "--instances",
        "1",
        "--max-batch-sizes",
        "2",
        "--queue-delays-us",
        "500",
        "-c",
        "1",
        *TINY,
        "--scratch",
        str(scratch),
        "--out",
        str(tmp_path / "results"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--configs-only --formats onnx --out" in proc.stdout
    assert "--cpu-instances 1 --max-batch-size 2 --queue-delay-us 500" in proc.stdout

    # the scratch copy was rewritten and served; the exported repository was not touched
    cpu = parse_pbtxt((scratch / model / "configs" / "cpu.pbtxt").read_text())
    assert cpu.max_batch_size == 2 and cpu.dynamic_batching.max_queue_delay_microseconds == 500
    assert source_cpu.read_text() == before

    run = _single_run_dir(tmp_path / "results")
    data = json.loads((run / "results.json").read_text())
    assert data["winner"] == "i1-mb2-d500"
    assert data["candidates"][0]["best"]["throughput"] > 0
    assert list((run / "raw").glob(f"i1-mb2-d500_{model}_grpc_b1_c1.csv"))
    assert "Best: **i1-mb2-d500**" in (run / "summary.md").read_text()
    assert (run / "servers" / "i1-mb2-d500" / "triton.log").is_file()
