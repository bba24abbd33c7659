"""Markdown tables, the throughput-vs-p95-latency plot and the file names of a benchmark run."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnext_triton.bench.baselines import BaselineResult
from resnext_triton.bench.perf_csv import PerfPoint

if TYPE_CHECKING:
    from resnext_triton.bench.ratios import Ratio

PLOT_FILE = "throughput_vs_p95.png"
SUMMARY_FILE = "summary.md"
RESULTS_FILE = "results.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON (values JSON does not know, such as paths, as strings)."""
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def number(value: float | None, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, or ``-`` when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (numbers right-aligned when every cell of a column parses as one)."""

    def numeric(col: int) -> bool:
        cells = [r[col] for r in rows if r[col] not in ("-", "")]
        try:
            [float(c) for c in cells]
        except ValueError:
            return False
        return bool(cells)

    align = ["---:" if numeric(i) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def served_table(points: Sequence[PerfPoint]) -> str:
    """perf_analyzer results: one row per model, protocol, config, batch and concurrency."""
    rows = []
    for p in sorted(points, key=lambda p: (p.config, p.model, p.protocol, p.batch, p.concurrency)):
        status = f"error: {p.error}" if not p.ok else ("yes" if p.stable else "no (median of last 3 windows)")
        rows.append([p.model, p.protocol, p.config, str(p.batch), str(p.concurrency), number(p.throughput, 2),
                     number(p.p50_ms), number(p.p95_ms), number(p.p99_ms), number(p.server_queue_ms),
                     number(p.server_infer_ms), status])
    header = ["model", "protocol", "config", "batch", "concurrency", "img/s", "p50 ms", "p95 ms", "p99 ms",
              "server queue ms", "server infer ms", "stable"]
    return markdown_table(header, rows)


def baseline_table(results: Sequence[BaselineResult]) -> str:
    """In-process baselines: one row per baseline and batch size."""
    rows = [[r.name, str(r.batch), str(r.images), number(r.seconds, 2), number(r.throughput, 2),
             number(r.percentile_ms(50)), number(r.percentile_ms(95)), r.note or "-"] for r in results]
    return markdown_table(["baseline", "batch", "images", "seconds", "img/s", "p50 ms/batch", "p95 ms/batch", "note"],
                          rows)


def ratio_table(ratios: Sequence[Ratio]) -> str:
    """The ratios against their goals."""
    rows = []
    for r in ratios:
        rows.append([f"({r.key}) {r.title}", number(r.value, 2), "-" if r.goal is None else f">= {r.goal:g}",
                     r.verdict, f"{r.numerator} / {r.denominator}" + (f"; {r.note}" if r.note else "")])
    return markdown_table(["ratio", "measured", "goal", "verdict", "how"], rows)


def plot_throughput_vs_latency(
    points: Sequence[PerfPoint],
    path: Path,
    *,
    baselines: Sequence[BaselineResult] = (),
    title: str = "ResNeXt101-32x4d on Triton: throughput vs p95 latency",
) -> Path:
    """Write a PNG: one line per model/protocol/config/batch across concurrency; baselines as markers.

    Raises:
        ValueError: if no point was measured.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[tuple[str, str, str, int], list[PerfPoint]] = defaultdict(list)
    for p in points:
        if p.ok:
            lines[(p.model, p.protocol, p.config, p.batch)].append(p)
    if not lines and not baselines:
        raise ValueError("nothing measured to plot")
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=110)
    ax.set_prop_cycle(color=[plt.get_cmap("tab20")(i) for i in range(20)])
    for (model, protocol, config, batch), series in sorted(lines.items()):
        series.sort(key=lambda p: p.concurrency)
        label = f"{model.replace('resnext101_32x4d_', '')} {protocol} b{batch}"
        if config != "default":
            label += f" [{config}]"
        xs = [float(p.p95_ms or 0.0) for p in series]
        ys = [float(p.throughput or 0.0) for p in series]
        (line,) = ax.plot(xs, ys, marker="o", linestyle="--" if protocol == "http" else "-", label=label)
        for p in series:
            ax.annotate(f"c{p.concurrency}", (p.p95_ms, p.throughput), textcoords="offset points", xytext=(4, 3),
                        fontsize=7, color=line.get_color())
    markers = iter("s^vDPX*")
    groups: dict[str, list[BaselineResult]] = defaultdict(list)
    for b in baselines:
        if b.latencies_ms:
            groups[b.name].append(b)
    for name, results in groups.items():
        ax.scatter([float(r.percentile_ms(95) or 0.0) for r in results], [r.throughput for r in results],
                   marker=next(markers, "o"),
                   s=50, edgecolors="black", zorder=3, label=name)
        for r in results:
            ax.annotate(f"b{r.batch}", (r.percentile_ms(95), r.throughput), textcoords="offset points",
                        xytext=(4, -9), fontsize=7)
    ax.set_xlabel("p95 latency per request (in-process: per batch), ms")
    ax.set_ylabel("throughput (images/s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
