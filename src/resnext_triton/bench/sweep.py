"""``bench/perf_sweep.py``: perf_analyzer sweeps of the served models beside in-process baselines.

One run writes ``bench/results/<timestamp>/``:

* ``raw/<model>_<protocol>_b<batch>_c<concurrency>.csv`` -- perf_analyzer's own CSV (``-f``,
  ``--verbose-csv``) and ``.log`` -- its command line and console output;
* ``input_data.json`` -- the real photos, preprocessed, as perf_analyzer ``--input-data``;
* ``results.json`` -- every number below, the machine, the load and the command;
* ``summary.md`` -- the tables; ``throughput_vs_p95.png`` -- the plot; ``triton.log``.

The baselines run on the same photos (:func:`resnext_triton.samples.sample_photos`, round-robin):
the torch.hub example loop, TorchScript and ONNX Runtime in-process, ``client/classify.py`` end to
end over a folder of the photos, and the client's preprocessing threaded and single-threaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnext_triton.bench import machine
from resnext_triton.bench.baselines import BaselineResult, cycle, hub_example, model_only
from resnext_triton.bench.perf import (
    PROTOCOLS,
    MeasureSettings,
    PerfAnalyzerError,
    PerfPoint,
    PerfRun,
    find_perf_analyzer,
    perf_analyzer_version,
    run_perf,
    write_input_data,
)
from resnext_triton.bench.preprocessing import PreprocessTiming, compare_preprocessing
from resnext_triton.bench.report import (
    Ratio,
    baseline_table,
    markdown_table,
    plot_throughput_vs_latency,
    ratio_table,
    served_table,
)
from resnext_triton.bench.serving import EndpointError, Endpoints, endpoints_from_urls, local_triton, model_ready
from resnext_triton.spec import Format, ModelSpec

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]
RESULTS_DIR = ROOT / "bench" / "results"
BASELINES = ("hub", "torchscript", "onnxruntime", "classify", "preprocess", "sgemm")
PLOT_FILE = "throughput_vs_p95.png"
SUMMARY_FILE = "summary.md"
RESULTS_FILE = "results.json"
Echo = Callable[[str], None]


def int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (positive, in order, no duplicates).

    Raises:
        argparse.ArgumentTypeError: on a non-integer or a value below 1.
    """
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def name_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type for a comma-separated subset of ``choices``."""

    def parse(text: str) -> list[str]:
        values = [part.strip().lower() for part in text.split(",") if part.strip()]
        bad = [v for v in values if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(choices)}")
        return list(dict.fromkeys(values))

    return parse


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the sweep and the config search: repository, models, timeouts."""
    group = parser.add_argument_group("server")
    group.add_argument("--repo", type=Path, default=ROOT / "model_repository",
                       help="model repository to serve (and to load in-process baselines from)")
    group.add_argument("--models", type=lambda s: [m for m in s.split(",") if m],
                       help="comma-separated model names (default: the ONNX and TorchScript models that are ready)")
    group.add_argument("--server-timeout", type=float, default=300.0, help="seconds to wait for Triton to be ready")


def add_measure_arguments(parser: argparse.ArgumentParser) -> None:
    """perf_analyzer measurement options."""
    group = parser.add_argument_group("perf_analyzer measurement (count_windows mode)")
    group.add_argument("--window-images", type=int, default=48,
                       help="images per measurement window: --measurement-request-count is ceil(this / batch), "
                       "at least twice the concurrency")
    group.add_argument("--min-requests", type=int, default=4, help="smallest --measurement-request-count")
    group.add_argument("--stability-percentage", type=float, default=20.0,
                       help="perf_analyzer --stability-percentage: count windows last whole seconds, so one request "
                       "more or less in a window moves its throughput by batch / window-images (17%% at batch 8)")
    group.add_argument("--max-trials", type=int, default=6, help="perf_analyzer --max-trials (windows per point)")
    group.add_argument("--perf-timeout", type=float, default=600.0, help="seconds allowed to one perf_analyzer run")


def measure_settings(args: argparse.Namespace) -> MeasureSettings:
    """The :class:`MeasureSettings` of parsed arguments."""
    return MeasureSettings(window_images=args.window_images, min_requests=args.min_requests,
                           stability_percentage=args.stability_percentage, max_trials=args.max_trials,
                           timeout_s=args.perf_timeout)


def build_parser() -> argparse.ArgumentParser:
    """The ``bench/perf_sweep.py`` command line."""
    parser = argparse.ArgumentParser(
        prog="bench/perf_sweep.py",
        description="Sweep concurrency and batch size with perf_analyzer over gRPC and HTTP for each served model, "
        "time in-process baselines on the same real photos, and write CSVs, a markdown summary and a plot.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_server_arguments(parser)
    parser.add_argument("-u", "--url", action="append", default=[], metavar="PROTOCOL://HOST:PORT",
                        help="benchmark a running server (grpc://127.0.0.1:8001, http://127.0.0.1:8000; repeatable) "
                        "instead of starting a local Triton on free loopback ports")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--protocols", type=name_list(PROTOCOLS), default=list(PROTOCOLS), help="grpc,http")
    sweep.add_argument("-b", "--batch-sizes", type=int_list, default=[1, 4, 8], help="client batch sizes")
    sweep.add_argument("-c", "--concurrency", type=int_list, default=[1, 2, 4], help="concurrency levels")
    add_measure_arguments(parser)
    base = parser.add_argument_group("baselines")
    base.add_argument("--baselines", type=name_list(BASELINES), default=list(BASELINES),
                      help=f"which to run: {','.join(BASELINES)}")
    base.add_argument("--no-baselines", action="store_true", help="perf_analyzer sweep only")
    base.add_argument("--baseline-batch", type=int, default=8,
                      help="batch of the torch.hub loop and classify.py (the client's default)")
    base.add_argument("--baseline-images", type=int, default=48,
                      help="photos (round-robin over the samples) per baseline and batch size")
    base.add_argument("--preprocess-images", type=int, default=192, help="photos for the preprocessing comparison")
    base.add_argument("--sgemm-size", type=int, default=2048, help="matrix size of the SGEMM ceiling measurement")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory (a timestamped run goes in it)")
    out.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


# --------------------------------------------------------------------------------------------- served


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


# --------------------------------------------------------------------------------------------- baselines


@dataclass
class BaselineReport:
    """Everything measured in-process, and why anything was skipped."""

    results: list[BaselineResult] = field(default_factory=list)
    preprocessing: list[PreprocessTiming] = field(default_factory=list)
    sgemm: machine.SgemmResult | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    classify_command: list[str] = field(default_factory=list)

    def find(self, prefix: str, batch: int | None = None) -> BaselineResult | None:
        """The result whose name starts with ``prefix`` (at ``batch``)."""
        return next((r for r in self.results if r.name.startswith(prefix) and batch in (None, r.batch)), None)


def model_file(repo: Path, spec: ModelSpec, fmt: Format) -> Path | None:
    """The newest exported file of a format in a repository, or None."""
    from resnext_triton.triton.repository import latest_version

    version = latest_version(repo / spec.model_name(fmt))
    path = version / fmt.filename if version is not None else None
    return path if path is not None and path.is_file() else None


def preprocess_photos(photos: Sequence[Path], spec: ModelSpec) -> np.ndarray:
    """The photos through the client's preprocessing: float32 (N, 3, 224, 224)."""
    from resnext_triton.preprocess import preprocess_path

    return np.stack([preprocess_path(p, spec.preprocessing) for p in photos]).astype(np.float32)


def _in_process_models(report: BaselineReport, which: Sequence[str], repo: Path, spec: ModelSpec,
                       inputs: np.ndarray, batches: Sequence[int], images: int, echo: Echo) -> None:
    from resnext_triton.bench.baselines import onnxruntime_runner, torchscript_runner

    makers = {"onnxruntime": (Format.ONNX, onnxruntime_runner, "ONNX Runtime in-process"),
              "torchscript": (Format.TORCHSCRIPT, torchscript_runner, "TorchScript in-process")}
    for key in ("onnxruntime", "torchscript"):
        if key not in which:
            continue
        fmt, make, name = makers[key]
        path = model_file(repo, spec, fmt)
        if path is None:
            report.skipped[key] = f"no exported {fmt.value} model in {repo}"
            echo(f"  skip {name}: {report.skipped[key]}")
            continue
        runner = make(path)
        for batch in batches:
            result = model_only(name, runner, inputs, batch=batch, images=images)
            result.note = "model only (input batch ready)"
            report.results.append(result)
            echo(f"  {baseline_line(result)}")
        del runner


def baseline_line(r: BaselineResult) -> str:
    """One console line for a baseline."""
    p95 = r.percentile_ms(95)
    lat = f"  p95 {p95:7.1f} ms/batch" if p95 is not None else ""
    return f"{r.name:<48} b{r.batch:<2} {r.throughput:6.2f} img/s  ({r.images} images, {r.seconds:.1f} s){lat}"


def _hub(report: BaselineReport, spec: ModelSpec, photos: Sequence[Path], batch: int, images: int,
         echo: Echo) -> None:
    from resnext_triton.weights import load_weights

    quiet = logging.getLogger("resnext_triton.weights")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "random weights" warning is about exports
    try:
        model = load_weights(spec, "random", progress=False).model  # speed does not depend on the values
    finally:
        quiet.setLevel(level)
    result = hub_example(model, photos, batch=batch, images=images, pre=spec.preprocessing)
    result.note = "PIL open+transforms, torch.cat, eager model, softmax, top-5 per batch"
    report.results.append(result)
    echo(f"  {baseline_line(result)}")


_CLASSIFIED = re.compile(r"classified (\d+) of (\d+) inputs .* in ([0-9.]+) s \(([0-9.]+) img/s\)")


def classify_end_to_end(
    photos: Sequence[Path], endpoints: Endpoints, model: str, *, batch: int, images: int, protocol: str = "grpc",
    timeout_s: float = 900.0,
) -> tuple[BaselineResult, list[str]]:
    """Run ``client/classify.py`` as a subprocess over a folder of ``images`` photo copies; time it.

    The wall-clock time covers the whole process (interpreter start, imports, readiness check,
    decoding, requests, printing), i.e. what a user waits for.

    Raises:
        RuntimeError: if classify.py fails or classifies fewer images than given.
    """
    with tempfile.TemporaryDirectory(prefix="resnext-bench-photos-") as tmp:
        folder = Path(tmp)
        for i, photo in enumerate(cycle(photos, images)):
            shutil.copyfile(photo, folder / f"{i:04d}_{photo.name}")
        cmd = [sys.executable, str(ROOT / "client" / "classify.py"), str(folder), "-u", endpoints.urls[protocol],
               "-i", protocol, "-m", model, "-b", str(batch), "--json", "--no-progress"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        seconds = time.perf_counter() - start
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    ok = sum(1 for line in lines if not line.get("error"))
    if proc.returncode != 0 or ok != images:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"classify.py exit {proc.returncode}, {ok} of {images} classified: {tail}")
    match = _CLASSIFIED.search(proc.stderr)
    note = f"subprocess wall clock; classify.py itself reports {match.group(4)} img/s after start-up" if match else \
        "subprocess wall clock"
    shown = [Path(cmd[0]).name, "client/classify.py", "<folder>", *cmd[3:]]
    return BaselineResult(name=f"classify.py end to end ({protocol})", batch=batch, images=images, seconds=seconds,
                          note=note), shown


def run_baselines(
    args: argparse.Namespace, spec: ModelSpec, photos: Sequence[Path], inputs: np.ndarray, endpoints: Endpoints,
    echo: Echo = print,
) -> BaselineReport:
    """Every in-process baseline the arguments ask for, sequentially (nothing else runs meanwhile)."""
    report = BaselineReport()
    which = [] if args.no_baselines else args.baselines
    if "sgemm" in which:
        report.sgemm = machine.measure_sgemm(args.sgemm_size)
        echo(f"  SGEMM {report.sgemm.n}x{report.sgemm.n} float32: numpy {report.sgemm.numpy_gflops:.0f} GFLOP/s, "
             f"torch {report.sgemm.torch_gflops or 0:.0f} GFLOP/s -> ceiling {report.sgemm.images_per_s:.1f} img/s")
    if "preprocess" in which:
        report.preprocessing = compare_preprocessing(cycle(photos, args.preprocess_images), spec.preprocessing,
                                                     hub=importlib.util.find_spec("torch") is not None)
        for t in report.preprocessing:
            echo(f"  {t.name:<56} {t.throughput:7.1f} img/s  identical: {t.identical}")
    missing = [name for name in ("torch", "onnxruntime") if importlib.util.find_spec(name) is None]
    needs = [b for b in ("onnxruntime", "torchscript", "hub") if b in which]
    if missing and needs:
        for key in needs:
            report.skipped[key] = f"needs {' and '.join(missing)} (pip install 'resnext-triton[export]')"
        echo(f"  skip {', '.join(needs)}: {report.skipped[needs[0]]}")
        which = [b for b in which if b not in needs]
    _in_process_models(report, which, args.repo, spec, inputs, args.batch_sizes, args.baseline_images, echo)
    if "hub" in which:
        _hub(report, spec, photos, args.baseline_batch, args.baseline_images, echo)
    if "classify" in which:
        _classify(report, spec, photos, endpoints, args, echo)
    return report


def _classify(report: BaselineReport, spec: ModelSpec, photos: Sequence[Path], endpoints: Endpoints,
              args: argparse.Namespace, echo: Echo) -> None:
    model = spec.model_name(Format.ONNX)
    protocol = "grpc" if "grpc" in endpoints.urls else next(iter(endpoints.urls), None)
    if protocol is None or not model_ready(endpoints, model):
        report.skipped["classify"] = f"{model} is not ready on the server"
        echo(f"  skip classify.py: {report.skipped['classify']}")
        return
    try:
        result, report.classify_command = classify_end_to_end(
            photos, endpoints, model, batch=args.baseline_batch, images=args.baseline_images, protocol=protocol)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        report.skipped["classify"] = str(exc)
        echo(f"  classify.py FAILED: {exc}")
        return
    report.results.append(result)
    echo(f"  {baseline_line(result)}  [{result.note}]")


# --------------------------------------------------------------------------------------------- ratios


def _best(points: Sequence[PerfPoint], **match: Any) -> PerfPoint | None:
    found = [p for p in points if p.ok and all(getattr(p, k) == v for k, v in match.items())]
    return max(found, key=lambda p: p.throughput or 0.0, default=None)


def compute_ratios(points: Sequence[PerfPoint], base: BaselineReport, spec: ModelSpec, baseline_batch: int
                   ) -> list[Ratio]:
    """The four ratios of the benchmark brief (a per batch size), from what was measured."""
    ratios = []
    onnx = spec.model_name(Format.ONNX)
    for ort in (r for r in base.results if r.name.startswith("ONNX Runtime in-process")):
        served = _best(points, model=onnx, protocol="grpc", batch=ort.batch)
        http = _best(points, model=onnx, protocol="http", batch=ort.batch)
        note = f"best over concurrency; gRPC c{served.concurrency}" if served else "no gRPC point"
        if http and http.throughput:
            note += f"; HTTP {http.throughput / ort.throughput:.2f} (c{http.concurrency})"
        ratios.append(Ratio(f"a/b{ort.batch}", f"Triton served / in-process ONNX Runtime, batch {ort.batch}",
                            served.throughput / ort.throughput if served and served.throughput else None, 0.95,
                            f"{_f(served.throughput if served else None)} img/s served ({onnx}, gRPC)",
                            f"{ort.throughput:.2f} img/s in-process", note))
    classify, hub = base.find("classify.py"), base.find("torch.hub example", baseline_batch)
    ratios.append(Ratio("b", "classify.py end to end / torch.hub example loop",
                        classify.throughput / hub.throughput if classify and hub else None, 1.5,
                        f"{_f(classify.throughput if classify else None)} img/s classify.py",
                        f"{_f(hub.throughput if hub else None)} img/s torch.hub loop",
                        f"batch {baseline_batch}, {classify.images if classify else '?'} photos"))
    if len(base.preprocessing) >= 2:
        ref, thr = base.preprocessing[0], base.preprocessing[1]
        ratios.append(Ratio("c", "client threaded preprocessing / single-threaded reference",
                            thr.throughput / ref.throughput, 1.8, f"{thr.throughput:.1f} img/s ({thr.workers} threads)",
                            f"{ref.throughput:.1f} img/s (1 thread)",
                            f"identical output: {thr.identical}; {machine.usable_cores()} cores"))
    else:
        ratios.append(Ratio("c", "client threaded preprocessing / single-threaded reference", None, 1.8, "-", "-"))
    best = _best(points)
    sgemm = base.sgemm
    ratios.append(Ratio("d", "best served images/s / SGEMM ceiling (GFLOP/s / 16 GFLOP)",
                        best.throughput / sgemm.images_per_s if best and best.throughput and sgemm else None, None,
                        f"{_f(best.throughput if best else None)} img/s "
                        f"({best.model} {best.protocol} b{best.batch} c{best.concurrency})" if best else "-",
                        f"{sgemm.images_per_s:.2f} img/s ({sgemm.gflops:.0f} GFLOP/s)" if sgemm else "-",
                        "the fraction of the peak matrix-multiply rate the served model reaches"))
    return ratios


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# --------------------------------------------------------------------------------------------- output


def command_line(argv: Sequence[str] | None, script: str = "bench/perf_sweep.py") -> str:
    """The command as a user would type it."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", script, *args])


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
                  f"{_f(s.torch_gflops)} GFLOP/s; ceiling {s.gflops:.1f} GFLOP/s / 16 GFLOP = "
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
    (run_dir / RESULTS_FILE).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    write_summary(run_dir / SUMMARY_FILE, meta, points, base, ratios)
    if plot and (any(p.ok for p in points) or base.results):
        in_process = [r for r in base.results if r.latencies_ms]
        plot_throughput_vs_latency(points, run_dir / PLOT_FILE, baselines=in_process)
    echo(f"wrote {run_dir / SUMMARY_FILE}, {run_dir / RESULTS_FILE}" + (f", {run_dir / PLOT_FILE}" if plot else ""))


def new_run_dir(out: Path) -> Path:
    """``out/<YYYYmmdd-HHMMSS>`` (a suffix is added if it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out / stamp
    n = 1
    while run_dir.exists():
        run_dir = out / f"{stamp}-{n}"
        n += 1
    (run_dir / "raw").mkdir(parents=True)
    return run_dir


# --------------------------------------------------------------------------------------------- main


def _validate(args: argparse.Namespace) -> None:
    if args.baseline_batch < 1 or args.baseline_images < 1 or args.preprocess_images < 1:
        raise ValueError("--baseline-batch, --baseline-images and --preprocess-images must be >= 1")
    if not args.url and not args.repo.is_dir():
        raise ValueError(f"model repository {args.repo} does not exist (export one with export/export.py, "
                         "or pass -u URLs of a running server)")


def _measure(args: argparse.Namespace, endpoints: Endpoints, spec: ModelSpec, photos: list[Path],
             run_dir: Path, settings: MeasureSettings) -> tuple[list[PerfPoint], BaselineReport]:
    inputs = preprocess_photos(photos, spec)
    input_data = write_input_data(inputs, spec.input_name, run_dir / "input_data.json")
    models = args.models or default_models(endpoints, spec)
    if not models:
        raise ValueError("no ready model to benchmark (pass --models)")
    print(f"served models: {', '.join(models)}; protocols {', '.join(args.protocols)}; batch "
          f"{args.batch_sizes}; concurrency {args.concurrency}")
    points = run_served(models, endpoints, args.protocols, args.batch_sizes, args.concurrency, settings,
                        run_dir / "raw", input_data=input_data)
    print("in-process baselines:")
    base = run_baselines(args, spec, photos, inputs, endpoints)
    return points, base


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that ``finally`` blocks stop the Triton a run started."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; returns 0 when every perf_analyzer point and baseline produced a number."""
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("resnext_triton").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    from resnext_triton.samples import sample_photos

    try:
        _validate(args)
        settings = measure_settings(args)
        endpoints = endpoints_from_urls(args.url) if args.url else None
        binary = find_perf_analyzer()
    except (ValueError, EndpointError, PerfAnalyzerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    photos = sample_photos()
    if not photos:
        print("error: no sample photos (install matplotlib / scikit-image: scripts/bootstrap.py)", file=sys.stderr)
        return 2
    spec = ModelSpec()
    run_dir = new_run_dir(args.out)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "run": run_dir.name, "command": command_line(argv), "machine": machine.machine_info(),
        "load_before": machine.LoadSnapshot.now().line(), "photos": [p.name for p in photos],
        "perf_analyzer": perf_analyzer_version(binary), "settings": settings_text(settings),
    }
    print(f"run {run_dir}\nmachine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores\n"
          f"load: {meta['load_before']}")
    from resnext_triton.triton.server import ServerError

    monitor = machine.LoadMonitor()
    try:
        with monitor:
            if endpoints is not None:
                points, base = _measure(args, endpoints, spec, photos, run_dir, settings)
            else:
                with local_triton(args.repo, args.models, run_dir=run_dir, timeout_s=args.server_timeout) as endpoints:
                    print(f"local Triton {endpoints.version} at grpc {endpoints.urls['grpc']}, "
                          f"http {endpoints.urls['http']}")
                    points, base = _measure(args, endpoints, spec, photos, run_dir, settings)
    except ServerError as exc:
        print(f"error: {exc}\n{exc.log_tail}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta.update(triton_version=endpoints.version, load_after=machine.LoadSnapshot.now().line(),
                load_during=monitor.summary(), load_samples=monitor.to_dict(),
                seconds=time.perf_counter() - started, endpoints=endpoints.urls,
                started_locally=endpoints.started_locally)
    ratios = compute_ratios(points, base, spec, args.baseline_batch)
    write_results(run_dir, meta, points, base, ratios, plot=not args.no_plot)
    print("\n" + served_table(points) + "\n\n" + baseline_table(base.results))
    print("\nratios:")
    for ratio in ratios:
        print("  " + ratio.line())
    failed = [p for p in points if not p.ok]
    return 1 if failed or base.skipped.get("classify", "").startswith("classify.py exit") else 0


def settings_text(s: MeasureSettings) -> str:
    """How perf_analyzer decided each point was measured, in words."""
    return (f"count_windows, >= max(ceil({s.window_images} / batch), 2 x concurrency, {s.min_requests}) requests per "
            "window, "
            f"stability {s.stability_percentage:g}% over 3 windows on p{s.percentile} and throughput, "
            f"max {s.max_trials} windows")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
