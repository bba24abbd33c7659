"""The GPU harness's served measurements: perf_analyzer over system shared memory, within a time budget.

Each point is one perf_analyzer process (:func:`resnext_triton.bench.perf.build_command`: count
windows, stability, percentiles, CSV) with ``--shared-memory system``: the requests' tensors go
through POSIX shared memory instead of the gRPC messages, as a client on the same machine would
send them. The input data are the sample photos, preprocessed and cast to the model's input dtype
(FP16 for the FP16 TorchScript model). Points are measured in order (batch, then concurrency)
while the budget lasts; those left over are recorded as skipped, so one call of at most ten
minutes always ends with a report.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnext_triton.bench.gpu_tools import HarnessTools
from resnext_triton.bench.perf import MeasureSettings, PerfRun, build_command
from resnext_triton.bench.perf_csv import PerfPoint, read_point

MIN_POINT_S = 20.0
"""A point is started only with at least this much of the budget left."""


@dataclass(frozen=True)
class Grid:
    """Request batch sizes x concurrencies, without the points holding more than ``max_in_flight`` images."""

    batches: tuple[int, ...]
    concurrencies: tuple[int, ...]
    max_in_flight: int = 1024

    def __post_init__(self) -> None:
        if not self.batches or not self.concurrencies or min(self.batches + self.concurrencies) < 1:
            raise ValueError("batch sizes and concurrencies must be positive, at least one of each")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be positive, got {self.max_in_flight}")

    def points(self) -> list[tuple[int, int]]:
        """(batch, concurrency) pairs in measuring order; each batch keeps at least its concurrency 1 point."""
        out = []
        for batch in self.batches:
            kept = [c for c in self.concurrencies if batch * c <= self.max_in_flight]
            out += [(batch, c) for c in (kept or [min(self.concurrencies)])]
        return out


class Deadline:
    """Seconds left until a wall-clock deadline."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.end - self._clock()


def write_input_data(images: np.ndarray, input_name: str, path: Path) -> Path:
    """perf_analyzer ``--input-data`` JSON: one batch-1 entry per image, in the array's own dtype.

    Raises:
        ValueError: if ``images`` is not a floating (N, C, H, W) array.
    """
    if images.ndim != 4 or images.dtype.kind != "f":
        raise ValueError(f"expected a floating (N, C, H, W) array, got {images.dtype} {images.shape}")
    little = images.dtype.newbyteorder("<")
    entries = [{input_name: {"content": {"b64": base64.b64encode(np.ascontiguousarray(i, dtype=little).tobytes())
                                         .decode("ascii")}, "shape": list(i.shape)}} for i in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": entries}), encoding="utf-8")
    return path


def output_bytes(batch: int, elements: int, itemsize: int) -> int:
    """``--output-shared-memory-size``: one region per output, for the largest output of ``elements`` per image.

    perf_analyzer's default, 100 KiB, is too small for batch 64 of 1000 FP16 logits.
    """
    return batch * elements * itemsize + 4096


def largest_output(config_path: Path) -> int:
    """Elements per image of the largest output declared in a ``config.pbtxt`` (without the batch axis)."""
    from resnext_triton.triton.config import parse_pbtxt

    config = parse_pbtxt(config_path.read_text(encoding="utf-8"))
    return max(int(np.prod(list(o.dims))) for o in config.output)


def shm_command(binary: Path, run: PerfRun, settings: MeasureSettings, csv_path: Path, input_data: Path,
                out_bytes: int) -> list[str]:
    """The project's perf_analyzer command line, with system shared memory for inputs and outputs."""
    return [*build_command(binary, run, settings, csv_path, input_data),
            "--shared-memory", "system", "--output-shared-memory-size", str(out_bytes)]


def measure(run: PerfRun, settings: MeasureSettings, raw_dir: Path, tools: HarnessTools, input_data: Path,
            out_bytes: int, timeout_s: float) -> PerfPoint:
    """One perf_analyzer process; its CSV and console log are kept in ``raw_dir``."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    csv_path, log_path = raw_dir / f"{run.stem}.csv", raw_dir / f"{run.stem}.log"
    cmd = shm_command(tools.perf_analyzer, run, settings, csv_path, input_data, out_bytes)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=tools.perf_env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        parts = [p.decode("utf-8", "replace") if isinstance(p, bytes) else (p or "") for p in (exc.stdout, exc.stderr)]
        output, rc = "".join(parts) + f"\n[stopped after {timeout_s:.0f} s: the time budget]\n", -1
    log_path.write_text(" ".join(cmd) + "\n\n" + output, encoding="utf-8")
    point = read_point(run, csv_path, output, rc)
    point.seconds, point.log, point.command = time.perf_counter() - start, str(log_path), cmd
    return point


def sweep(model: str, grpc_url: str, grid: Grid, settings: MeasureSettings, *, tools: HarnessTools, raw_dir: Path,
          input_data: Path, output_elements: int, itemsize: int, deadline: Deadline,
          echo: Callable[[str], None] = print) -> list[PerfPoint]:
    """Measure every point of ``grid`` over gRPC while the deadline allows; the rest come back skipped."""
    from resnext_triton.bench.served import point_line

    points = []
    for batch, concurrency in grid.points():
        run = PerfRun(model, "grpc", grpc_url, batch, concurrency)
        left = deadline.remaining()
        if left < MIN_POINT_S:
            point = PerfPoint(model=model, protocol="grpc", batch=batch, concurrency=concurrency, config="default",
                              stable=False, error="skipped: the time budget ran out")
        else:
            timeout = min(settings.timeout_s, left)
            point = measure(run, settings, raw_dir, tools, input_data,
                            output_bytes(batch, output_elements, itemsize), timeout)
        echo("  " + point_line(point))
        points.append(point)
    return points


def best_by_batch(points: Sequence[PerfPoint]) -> dict[int, PerfPoint]:
    """The highest-throughput measured point of each request batch size."""
    best: dict[int, PerfPoint] = {}
    for p in points:
        if p.ok and (p.batch not in best or (p.throughput or 0.0) > (best[p.batch].throughput or 0.0)):
            best[p.batch] = p
    return best
