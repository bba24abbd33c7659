"""Run NVIDIA's perf_analyzer against a Triton server: find the binary, build the command, run it.

Every run is one model, one protocol, one batch size and one concurrency, measured in
``count_windows`` mode until three consecutive windows agree within ``stability_percentage``
(throughput and p95 latency). A count window lasts whole seconds (perf_analyzer starts at one
second and lengthens it until it holds ``--measurement-request-count`` requests), so its
throughput moves in steps of one request: ``batch / window_images`` relative to the whole (a
sixth at batch 8 with 48 images per window), and the stability percentage must be larger than
that step or the run never settles. Its raw CSV (``-f``, with ``--verbose-csv``) and its console
output are kept beside each other; :mod:`resnext_triton.bench.perf_csv` reads them back into a
:class:`~resnext_triton.bench.perf_csv.PerfPoint`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnext_triton.bench.perf_csv import PerfAnalyzerError, PerfPoint, read_point

log = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http")


def find_perf_analyzer() -> Path:
    """The perf_analyzer binary: beside the running interpreter (the project's venv), else on PATH.

    Raises:
        PerfAnalyzerError: if there is none (``python3 scripts/bootstrap.py`` installs it).
    """
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    raise PerfAnalyzerError(
        "perf_analyzer not found beside the interpreter or on PATH; run `python3 scripts/bootstrap.py` "
        "(it installs the binary from the tritonclient 2.51.0 wheel into .venv/bin)"
    )


def cuda_runtime_lib_dir() -> Path | None:
    """The lib directory of the nvidia-cuda-runtime-cu12 wheel (libcudart.so.12), if installed."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return lib if lib.is_dir() else None


def perf_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment perf_analyzer needs: LD_LIBRARY_PATH with the CUDA runtime wheel's lib dir."""
    env = dict(os.environ if base is None else base)
    lib = cuda_runtime_lib_dir()
    if lib is not None:
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        if str(lib) not in parts:
            env["LD_LIBRARY_PATH"] = os.pathsep.join([str(lib), *parts])
    return env


def perf_analyzer_version(binary: Path | None = None) -> str:
    """perf_analyzer's ``--version`` line, or ``"unknown"``."""
    try:
        out = subprocess.run(
            [str(binary or find_perf_analyzer()), "--version"],
            env=perf_env(), capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired, PerfAnalyzerError):
        return "unknown"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[-1].strip() if text else "unknown"


def write_input_data(batch: np.ndarray, input_name: str, path: Path) -> Path:
    """Write real input tensors as perf_analyzer ``--input-data`` JSON (one batch-1 entry per image).

    Args:
        batch: float32 array (N, C, H, W) of preprocessed images.
        input_name: the model's input tensor name.
        path: the JSON file to write.
    """
    if batch.ndim != 4 or batch.dtype != np.float32:
        raise ValueError(f"expected float32 (N, C, H, W), got {batch.dtype} {batch.shape}")
    entries = []
    for image in batch:
        raw = np.ascontiguousarray(image, dtype="<f4").tobytes()
        entries.append({input_name: {"content": {"b64": base64.b64encode(raw).decode("ascii")},
                                     "shape": list(image.shape)}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": entries}), encoding="utf-8")
    return path


@dataclass(frozen=True)
class MeasureSettings:
    """How perf_analyzer decides that a measurement is done.

    Attributes:
        window_images: images each count window must hold at least; the request count per
            window is ``ceil(window_images / batch)`` (at least ``min_requests`` and twice the
            concurrency), so windows last about as long at every batch size.
        min_requests: the smallest ``--measurement-request-count``.
        stability_percentage: ``--stability-percentage``: the last three windows must agree within it.
        max_trials: ``--max-trials``: windows tried before perf_analyzer gives up on stability.
        percentile: ``--percentile``: the latency percentile used for the stability check.
        timeout_s: wall-clock limit of one perf_analyzer process.
    """

    window_images: int = 48
    min_requests: int = 4
    stability_percentage: float = 20.0
    max_trials: int = 6
    percentile: int = 95
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if self.window_images < 1 or self.min_requests < 1 or self.max_trials < 3:
            raise ValueError("window_images and min_requests must be >= 1, max_trials >= 3")
        if not 0 < self.stability_percentage <= 100:
            raise ValueError(f"stability_percentage must be in (0, 100], got {self.stability_percentage}")
        if not 1 <= self.percentile <= 99:
            raise ValueError(f"percentile must be in 1..99, got {self.percentile}")

    def request_count(self, batch: int, concurrency: int = 1) -> int:
        """``--measurement-request-count``: ``ceil(window_images / batch)``, at least ``min_requests``.

        Also at least twice the concurrency: with ``c`` requests in flight, completions come in
        groups of up to ``c``, and a window of only ``c`` requests measures mostly where its edges fall.
        """
        return max(self.min_requests, math.ceil(self.window_images / batch), 2 * concurrency)


@dataclass(frozen=True)
class PerfRun:
    """One perf_analyzer invocation: a model at one batch size and concurrency over one protocol."""

    model: str
    protocol: str
    url: str
    batch: int
    concurrency: int
    config: str = "default"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.batch < 1 or self.concurrency < 1:
            raise ValueError("batch and concurrency must be >= 1")

    @property
    def stem(self) -> str:
        """File name stem of this run's CSV and log."""
        config = "" if self.config == "default" else f"{self.config}_"
        return f"{config}{self.model}_{self.protocol}_b{self.batch}_c{self.concurrency}"


def build_command(
    binary: Path, run: PerfRun, settings: MeasureSettings, csv_path: Path, input_data: Path | None
) -> list[str]:
    """The perf_analyzer command line for one run."""
    cmd = [
        str(binary), "-m", run.model, "-u", run.url, "-i", run.protocol, "-b", str(run.batch),
        "--concurrency-range", f"{run.concurrency}:{run.concurrency}",
        "--measurement-mode", "count_windows",
        "--measurement-request-count", str(settings.request_count(run.batch, run.concurrency)),
        "--stability-percentage", f"{settings.stability_percentage:g}",
        "--max-trials", str(settings.max_trials),
        "--percentile", str(settings.percentile),
        "-f", str(csv_path), "--verbose-csv", "-v",
    ]
    if input_data is not None:
        cmd += ["--input-data", str(input_data)]
    return cmd


def run_perf(
    run: PerfRun,
    settings: MeasureSettings,
    out_dir: Path,
    *,
    input_data: Path | None = None,
    binary: Path | None = None,
) -> PerfPoint:
    """Run perf_analyzer once; its CSV and console log go to ``out_dir/<stem>.csv|.log``.

    A run that ends without a report gives a point with ``error`` set rather than raising, so one
    failed setting does not lose a sweep; an unstable measurement that still wrote its CSV is kept
    with ``stable=False``.

    Raises:
        PerfAnalyzerError: if the binary is missing.
    """
    binary = binary or find_perf_analyzer()
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{run.stem}.csv"
    log_path = out_dir / f"{run.stem}.log"
    cmd = build_command(binary, run, settings, csv_path, input_data)
    log.debug("running %s", " ".join(cmd))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=perf_env(), capture_output=True, text=True,
                              timeout=settings.timeout_s, check=False)
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr) + f"\n[timed out after {settings.timeout_s:g} s]\n"
        rc = -1
    seconds = time.perf_counter() - start
    log_path.write_text(" ".join(cmd) + "\n\n" + output, encoding="utf-8")
    point = read_point(run, csv_path, output, rc)
    point.seconds = seconds
    point.log = str(log_path)
    point.command = cmd
    return point


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
