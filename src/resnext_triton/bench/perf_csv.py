"""What perf_analyzer reported: its CSV report (or, when it could not settle, its console) as a :class:`PerfPoint`.

perf_analyzer writes its CSV (``-f``, with ``--verbose-csv``) only when the last three count
windows agree within the stability percentage; the figures are those of these windows. Latencies
are reported by perf_analyzer in microseconds and kept here in milliseconds; ``throughput`` is
perf_analyzer's "Inferences/Second", which counts images (a batch-8 request is 8 inferences).
When the windows never agree, the windows it printed with ``-v`` still give an unstable point.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resnext_triton.bench.perf import PerfRun

UNSTABLE_MARKERS = ("Failed to obtain stable measurement", "unable to stabilize")
# With -v, perf_analyzer prints each measurement window: "Pass [3] throughput: 7.9 infer/sec. p95 latency: 51234 usec"
_PASS = re.compile(r"Pass \[(\d+)\] throughput: ([0-9.eE+-]+) infer/sec\. (?:(p\d+|Avg) latency): ([0-9.eE+-]+) usec")
_LATENCY_FIELDS = {"p50": "p50_ms", "p90": "p90_ms", "p95": "p95_ms", "p99": "p99_ms", "Avg": "avg_ms"}


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing, cannot start, or produced no report."""


@dataclass
class PerfPoint:
    """perf_analyzer's result for one :class:`~resnext_triton.bench.perf.PerfRun` (ms, images/s)."""

    model: str
    protocol: str
    batch: int
    concurrency: int
    config: str
    throughput: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    avg_ms: float | None = None
    server_queue_ms: float | None = None
    server_infer_ms: float | None = None
    stable: bool = True
    seconds: float = 0.0
    csv: str | None = None
    log: str | None = None
    command: list[str] = field(default_factory=list)
    error: str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when a throughput and a p95 latency were measured (stable or not)."""
        return self.error is None and self.throughput is not None and self.p95_ms is not None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


def _point(run: PerfRun, **figures: Any) -> PerfPoint:
    return PerfPoint(model=run.model, protocol=run.protocol, batch=run.batch, concurrency=run.concurrency,
                     config=run.config, **figures)


def parse_csv(path: Path) -> dict[str, float]:
    """The first data row of a perf_analyzer CSV report, as floats keyed by column name.

    Raises:
        PerfAnalyzerError: if the file has no data row.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = next((r for r in rows if r and r[0].strip() == "Concurrency"), None)
    if header is None:
        raise PerfAnalyzerError(f"{path}: no 'Concurrency' header row")
    start = rows.index(header) + 1
    data = next((r for r in rows[start:] if r and r[0].strip()), None)
    if data is None:
        raise PerfAnalyzerError(f"{path}: no data row")
    values: dict[str, float] = {}
    for name, text in zip(header, data, strict=False):
        try:
            values[name.strip()] = float(text)
        except ValueError:
            continue
    return values


def _ms(values: dict[str, float], column: str) -> float | None:
    return values[column] / 1000.0 if column in values else None


def point_from_csv(run: PerfRun, path: Path) -> PerfPoint:
    """Build a :class:`PerfPoint` from a perf_analyzer CSV report.

    Raises:
        PerfAnalyzerError: if the report lacks the throughput column.
    """
    values = parse_csv(path)
    if "Inferences/Second" not in values:
        raise PerfAnalyzerError(f"{path}: no 'Inferences/Second' column")
    return _point(
        run, throughput=values["Inferences/Second"],
        p50_ms=_ms(values, "p50 latency"), p90_ms=_ms(values, "p90 latency"),
        p95_ms=_ms(values, "p95 latency"), p99_ms=_ms(values, "p99 latency"), avg_ms=_ms(values, "Avg latency"),
        server_queue_ms=_ms(values, "Server Queue"), server_infer_ms=_ms(values, "Server Compute Infer"),
        csv=str(path),
    )


def parse_passes(output: str) -> list[tuple[float, str, float]]:
    """(throughput, latency statistic, latency in ms) of each window perf_analyzer printed with ``-v``.

    The statistic is the one it stabilizes on: ``p95`` with ``--percentile 95``, else ``Avg``.
    """
    return [(float(m.group(2)), m.group(3), float(m.group(4)) / 1000.0) for m in _PASS.finditer(output)]


def point_from_passes(run: PerfRun, output: str) -> PerfPoint | None:
    """An unstable point from the last three windows perf_analyzer measured (their median), or None.

    perf_analyzer writes no CSV when the windows never agree within the stability percentage; the
    windows it did measure are still real measurements, of which only the throughput and the
    stabilizing latency statistic (p95 with ``--percentile 95``) are printed.
    """
    passes = parse_passes(output)[-3:]
    if not passes:
        return None
    throughputs = sorted(t for t, _, _ in passes)
    latencies = sorted(lat for _, _, lat in passes)
    spread = throughputs[-1] / throughputs[0] - 1.0 if throughputs[0] > 0 else float("inf")
    point = _point(run, throughput=throughputs[len(passes) // 2], stable=False,
                   note=f"unstable: median of the last {len(passes)} windows (throughput spread {spread:.0%})")
    field_name = _LATENCY_FIELDS.get(passes[-1][1])
    if field_name:
        setattr(point, field_name, latencies[len(passes) // 2])
    return point


def read_point(run: PerfRun, csv_path: Path, output: str, returncode: int) -> PerfPoint:
    """The point one perf_analyzer process left: its CSV, else its unsettled windows, else its error.

    ``stable`` is False when the process failed or said it could not stabilize; a point without
    any figure carries the exit status and the last lines of ``output`` in ``error``.
    """
    stable = returncode == 0 and not any(marker in output for marker in UNSTABLE_MARKERS)
    point: PerfPoint | None
    try:
        point = point_from_csv(run, csv_path)
        point.stable = stable
    except (OSError, PerfAnalyzerError) as exc:
        point = None if stable else point_from_passes(run, output)
        if point is None:
            tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
            point = _point(run, stable=False, error=f"exit {returncode}: {tail or exc}")
    return point


def best_point(
    points: Sequence[PerfPoint], *, p95_budget_ms: float | None = None, prefer_stable: bool = False
) -> PerfPoint | None:
    """The measured point with the highest throughput (within the p95 budget, when given).

    With ``prefer_stable``, points perf_analyzer could not stabilize count only when no stable
    point qualifies (their throughput is a median of unsettled windows).
    """
    ok = [p for p in points if p.ok]
    if p95_budget_ms is not None:
        ok = [p for p in ok if p.p95_ms is not None and p.p95_ms <= p95_budget_ms]
    if prefer_stable and any(p.stable for p in ok):
        ok = [p for p in ok if p.stable]
    return max(ok, key=lambda p: p.throughput or 0.0, default=None)
