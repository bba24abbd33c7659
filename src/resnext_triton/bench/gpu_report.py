"""The GPU harness's results directory: a CSV, a markdown summary, a plot, JSON, and the raw files.

At most a handful of files, each flat in the directory (a device call brings back at most eight
files, two folders deep): ``results.csv``, ``summary.md``, ``throughput_vs_p95.png``,
``results.json``, ``run.log`` (written as the run goes) and ``raw.tar.gz`` (every perf_analyzer
CSV and log, the export logs, Triton's log).
"""

from __future__ import annotations

import csv
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnext_triton.bench.baselines import BaselineResult
from resnext_triton.bench.gpu_sweep import best_by_batch
from resnext_triton.bench.perf_csv import PerfPoint
from resnext_triton.bench.report import baseline_table, markdown_table, number, served_table, write_json

CSV_FILE, SUMMARY_FILE, PLOT_FILE = "results.csv", "summary.md", "throughput_vs_p95.png"
JSON_FILE, LOG_FILE, RAW_FILE = "results.json", "run.log", "raw.tar.gz"
SERVED_GOAL_IMG_S = 4000.0
"""Served throughput to reach on one H100."""
RATIO_GOAL = 0.9
"""Served throughput over the in-process throughput of the same file at the same batch size."""
ANCHORS = (
    "NVIDIA, V100 16GB: Triton TensorRT FP16, dynamic batching up to 64, 2 instances, 1 image per request: "
    "1312 img/s at concurrency 256",
    "NVIDIA, V100 16GB: PyTorch AMP (mixed precision) in-process: 1746 img/s at batch 256",
)
CSV_COLUMNS = ("kind", "name", "protocol", "batch", "concurrency", "img_s", "p50_ms", "p95_ms", "p99_ms",
               "server_queue_ms", "server_infer_ms", "stable", "error")


@dataclass(frozen=True)
class RatioRow:
    """Served over in-process at one batch size (``batch`` None: the best served point over the largest batch)."""

    batch: int | None
    served: float
    inprocess: float
    how: str

    @property
    def value(self) -> float:
        """Served throughput / in-process throughput."""
        return self.served / self.inprocess if self.inprocess > 0 else 0.0


def write_csv(path: Path, points: Sequence[PerfPoint], baselines: Sequence[BaselineResult]) -> Path:
    """One row per served point and per in-process baseline (ms, img/s)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for p in points:
            writer.writerow(["served", p.model, p.protocol, p.batch, p.concurrency, number(p.throughput, 2),
                             number(p.p50_ms, 3), number(p.p95_ms, 3), number(p.p99_ms, 3),
                             number(p.server_queue_ms, 3), number(p.server_infer_ms, 3), p.stable, p.error or ""])
        for b in baselines:
            writer.writerow(["in-process", b.name, "-", b.batch, 1, number(b.throughput, 2),
                             number(b.percentile_ms(50), 3), number(b.percentile_ms(95), 3),
                             number(b.percentile_ms(99), 3), "-", "-", True, ""])
    return path


def ratios(points: Sequence[PerfPoint], baselines: Sequence[BaselineResult]) -> list[RatioRow]:
    """Served / in-process (input from host memory) per request batch size, then best served / largest batch."""
    host = {b.batch: b for b in baselines if "host memory" in b.name}
    best = best_by_batch(points)
    rows = [RatioRow(batch, p.throughput or 0.0, host[batch].throughput,
                     f"c{p.concurrency} served vs in-process b{batch}")
            for batch, p in sorted(best.items()) if batch in host]
    if best and host:
        top = max(best.values(), key=lambda p: p.throughput or 0.0)
        largest = host[max(host)]
        rows.append(RatioRow(None, top.throughput or 0.0, largest.throughput,
                             f"best served (b{top.batch} c{top.concurrency}) vs in-process b{largest.batch}"))
    return rows


def ratio_table(rows: Sequence[RatioRow]) -> str:
    """The ratios against the goal."""
    body = [["overall" if r.batch is None else f"b{r.batch}", number(r.served), number(r.inprocess),
             number(r.value, 2), "meets" if r.value >= RATIO_GOAL else "below", r.how] for r in rows]
    return markdown_table(["batch", "served img/s", "in-process img/s", "served / in-process",
                           f"goal >= {RATIO_GOAL:g}", "how"], body)


def served_goal(points: Sequence[PerfPoint], device_name: str) -> str:
    """The best served throughput against the H100 goal (judged only on an H100)."""
    best = max((p.throughput or 0.0 for p in points if p.ok), default=0.0)
    if "H100" not in device_name:
        return f"best served {best:.1f} img/s; the {SERVED_GOAL_IMG_S:g} img/s goal is for an H100 ({device_name})"
    verdict = "meets" if best >= SERVED_GOAL_IMG_S else "below"
    return f"best served {best:.1f} img/s on {device_name}: {verdict} the goal of {SERVED_GOAL_IMG_S:g} img/s"


def summary_markdown(context: dict[str, Any], exports: Sequence[str], checks: Sequence[str],
                     points: Sequence[PerfPoint], baselines: Sequence[BaselineResult]) -> str:
    """The run's summary: conditions, export validation, served vs in-process, tables, ratios, goals."""
    lines = ["# GPU harness run", ""]
    lines += [f"- **{key}**: {value}" for key, value in context.items()]
    lines += ["", "## Export (validated against FP32 eager on the sample photos)", "", "```", *exports, "```", ""]
    lines += ["## Checks", "", *[f"- {c}" for c in checks], ""]
    lines += ["## Served (perf_analyzer, gRPC, system shared memory)", "", served_table(points), ""]
    lines += ["## In-process, same file, same photos", "", baseline_table(baselines), ""]
    lines += ["## Served / in-process", "", ratio_table(ratios(points, baselines)), ""]
    lines += ["## Goals and published anchors", "", f"- {served_goal(points, str(context.get('device', '')))}",
              *[f"- anchor: {a}" for a in ANCHORS], ""]
    return "\n".join(lines)


def write_raw_archive(dest: Path, members: Sequence[Path]) -> Path:
    """``raw.tar.gz`` of the files and directories that exist among ``members`` (by their names)."""
    with tarfile.open(dest, "w:gz") as tar:
        for path in members:
            if path.exists():
                tar.add(path, arcname=path.name)
    return dest


def write_report(out: Path, *, context: dict[str, Any], exports: Sequence[str], checks: Sequence[str],
                 points: Sequence[PerfPoint], baselines: Sequence[BaselineResult], raw: Sequence[Path]) -> list[Path]:
    """Write every file of the results directory but ``run.log``; returns them."""
    from resnext_triton.bench.report import plot_throughput_vs_latency

    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(out / CSV_FILE, points, baselines)]
    summary = out / SUMMARY_FILE
    summary.write_text(summary_markdown(context, exports, checks, points, baselines), encoding="utf-8")
    files.append(summary)
    try:
        files.append(plot_throughput_vs_latency(points, out / PLOT_FILE, baselines=baselines,
                                                title=f"ResNeXt101-32x4d, GPU harness: {context.get('device', '')}"))
    except (ValueError, ImportError) as exc:  # nothing measured, or no matplotlib
        checks = [*checks, f"no plot: {exc}"]
    write_json(out / JSON_FILE, {"context": context, "exports": list(exports), "checks": list(checks),
                                 "served": [p.to_dict() for p in points],
                                 "baselines": [b.to_dict() for b in baselines],
                                 "ratios": [{**r.__dict__, "value": r.value} for r in ratios(points, baselines)]})
    files.append(out / JSON_FILE)
    files.append(write_raw_archive(out / RAW_FILE, raw))
    return files
