"""The sweep's baselines, one after another on the same photos (nothing else runs meanwhile).

* the SGEMM ceiling of the machine (:mod:`resnext_triton.bench.machine`);
* the client's preprocessing, threaded and single-threaded (:mod:`resnext_triton.bench.preprocessing`);
* ONNX Runtime and TorchScript in-process on ready input batches, and the torch.hub example loop
  (:mod:`resnext_triton.bench.baselines`);
* ``client/classify.py`` end to end over a folder of the photos, against the served ONNX model.

What could not run is recorded in :attr:`BaselineReport.skipped` with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resnext_triton.bench import machine
from resnext_triton.bench.baselines import BaselineResult, cycle, hub_example, model_only
from resnext_triton.bench.cli import ROOT, Echo
from resnext_triton.bench.preprocessing import PreprocessTiming, compare_preprocessing
from resnext_triton.bench.serving import Endpoints, model_ready
from resnext_triton.spec import Format, ModelSpec

BASELINES = ("hub", "torchscript", "onnxruntime", "classify", "preprocess", "sgemm")
_CLASSIFIED = re.compile(r"classified (\d+) of (\d+) inputs .* in ([0-9.]+) s \(([0-9.]+) img/s\)")


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
