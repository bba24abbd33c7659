"""The served side of a benchmark: perf_analyzer over models x protocols x batch sizes x concurrencies.

Both commands measure this way: the sweep over every ready model, the config search over one
model per candidate configuration. The requests carry the sample photos, preprocessed as the
client does it (perf_analyzer ``--input-data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from resnext_triton.bench.cli import Echo
from resnext_triton.bench.perf import MeasureSettings, PerfRun, find_perf_analyzer, run_perf
from resnext_triton.bench.perf_csv import PerfPoint
from resnext_triton.bench.serving import Endpoints, model_ready
from resnext_triton.spec import Format, ModelSpec


def preprocess_photos(photos: Sequence[Path], spec: ModelSpec) -> np.ndarray:
    """The photos through the client's preprocessing: float32 (N, 3, 224, 224)."""
    from resnext_triton.preprocess import preprocess_path

    return np.stack([preprocess_path(p, spec.preprocessing) for p in photos]).astype(np.float32)


def default_models(endpoints: Endpoints, spec: ModelSpec) -> list[str]:
    """The ONNX and TorchScript models of ``spec`` that the server reports ready."""
    names = [spec.model_name(fmt) for fmt in (Format.ONNX, Format.TORCHSCRIPT)]
    return [name for name in names if model_ready(endpoints, name)]


def run_served(
    models: Sequence[str],
    endpoints: Endpoints,
    protocols: Sequence[str],
    batches: Sequence[int],
    concurrencies: Sequence[int],
    settings: MeasureSettings,
    raw_dir: Path,
    *,
    input_data: Path | None,
    config: str = "default",
    echo: Echo = print,
) -> list[PerfPoint]:
    """perf_analyzer over every model x protocol x batch x concurrency; one line printed per point."""
    binary = find_perf_analyzer()
    points = []
    for model in models:
        for protocol in protocols:
            if protocol not in endpoints.urls:
                echo(f"  skip {protocol}: no {protocol} URL")
                continue
            for batch in batches:
                for concurrency in concurrencies:
                    run = PerfRun(model, protocol, endpoints.urls[protocol], batch, concurrency, config)
                    point = run_perf(run, settings, raw_dir, input_data=input_data, binary=binary)
                    echo("  " + point_line(point))
                    points.append(point)
    return points


def point_line(p: PerfPoint) -> str:
    """One console line for a measured point."""
    what = f"{p.model} {p.protocol:<4} b{p.batch:<2} c{p.concurrency:<2}"
    if p.config != "default":
        what = f"[{p.config}] {what}"
    if not p.ok:
        return f"{what}  FAILED ({p.seconds:.0f} s): {p.error}"
    p50 = f"p50 {p.p50_ms:7.1f}" if p.p50_ms is not None else "p50     n/a"
    p99 = f"p99 {p.p99_ms:7.1f}" if p.p99_ms is not None else "p99     n/a"
    status = "stable" if p.stable else "UNSTABLE"
    return (f"{what}  {p.throughput:6.2f} img/s  {p50}  p95 {p.p95_ms:7.1f}  {p99} ms  {status}"
            f"  ({p.seconds:.0f} s)")
