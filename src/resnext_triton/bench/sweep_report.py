"""What one sweep run writes: ``results.json``, ``summary.md`` and the throughput-vs-p95 plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnext_triton.bench.baseline_suite import BaselineReport
from resnext_triton.bench.cli import Echo
from resnext_triton.bench.perf_csv import PerfPoint
from resnext_triton.bench.ratios import Ratio
from resnext_triton.bench.report import (
    PLOT_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    baseline_table,
    markdown_table,
    number,
    plot_throughput_vs_latency,
    ratio_table,
    served_table,
    write_json,
)


def write_summary(path: Path, meta: dict[str, Any], points: Sequence[PerfPoint], base: BaselineReport,
                  ratios: Sequence[Ratio]) -> None:
    """``summary.md`` of one run."""
    m = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        f"# perf sweep {meta['run']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} usable cores, {m['memory_gib']} GiB, {m['os']}",
        f"- Versions: {versions}; Triton {meta.get('triton_version') or '?'}; {meta.get('perf_analyzer', '?')}",
        f"- Load before: {meta['load_before']}",
        f"- Load during: {meta.get('load_during', 'not sampled')}",
        f"- Load after: {meta['load_after']}",
        f"- Photos: {', '.join(meta['photos'])}",
        f"- perf_analyzer: {meta['settings']}",
        f"- Wall time: {meta['seconds']:.0f} s",
        "",
        "## Served (perf_analyzer; latencies per request, img/s counts images)",
        "",
        served_table(points) if points else "(no served points)",
        "",
        "## In-process baselines and end to end",
        "",
        baseline_table(base.results) if base.results else "(none)",
        "",
    ]
    if base.preprocessing:
        rows = [[t.name, str(t.images), f"{t.seconds:.3f}", f"{t.throughput:.1f}", str(t.identical)]
                for t in base.preprocessing]
        lines += ["## Client preprocessing", "", markdown_table(["method", "images", "seconds", "img/s", "identical"],
                                                               rows), ""]
    if base.sgemm:
        s = base.sgemm
        lines += [f"SGEMM {s.n}x{s.n} float32: numpy {s.numpy_gflops:.1f} GFLOP/s, torch "
                  f"{number(s.torch_gflops, 2)} GFLOP/s; ceiling {s.gflops:.1f} GFLOP/s / 16 GFLOP = "
                  f"{s.images_per_s:.2f} img/s", ""]
    if base.skipped:
        lines += ["Skipped: " + "; ".join(f"{k}: {v}" for k, v in base.skipped.items()), ""]
    lines += ["## Ratios", "", ratio_table(ratios), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_results(run_dir: Path, meta: dict[str, Any], points: Sequence[PerfPoint], base: BaselineReport,
                  ratios: Sequence[Ratio], *, plot: bool, echo: Echo = print) -> None:
    """results.json, summary.md and (unless ``plot`` is False) the PNG."""
    data = {
        **meta,
        "served": [p.to_dict() for p in points],
        "baselines": [r.to_dict() for r in base.results],
        "preprocessing": [t.to_dict() for t in base.preprocessing],
        "sgemm": base.sgemm.to_dict() if base.sgemm else None,
        "skipped": base.skipped,
        "classify_command": base.classify_command,
        "ratios": [r.to_dict() for r in ratios],
    }
    write_json(run_dir / RESULTS_FILE, data)
    write_summary(run_dir / SUMMARY_FILE, meta, points, base, ratios)
    if plot and (any(p.ok for p in points) or base.results):
        in_process = [r for r in base.results if r.latencies_ms]
        plot_throughput_vs_latency(points, run_dir / PLOT_FILE, baselines=in_process)
    echo(f"wrote {run_dir / SUMMARY_FILE}, {run_dir / RESULTS_FILE}" + (f", {run_dir / PLOT_FILE}" if plot else ""))

