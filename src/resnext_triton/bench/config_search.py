"""``bench/config_search.py``: the Triton config that serves most images/s within a p95 budget here.

For every combination of CPU instance count, max batch size and dynamic-batcher queue delay it
rewrites the model's configs in a scratch copy of the repository with the exporter's own command
(``export/export.py --configs-only ...``, so what is measured is exactly what that command
writes), starts a local Triton on that copy (free 127.0.0.1 ports), sweeps concurrency with
perf_analyzer and stops it. It reports the configuration with the best throughput whose p95
latency stays within ``--p95-budget-ms`` (stable perf_analyzer measurements first), and prints the
one command that applies it.

Results go to ``bench/results/config-search-<timestamp>/`` (raw perf_analyzer CSVs and logs,
``results.json``, ``summary.md``, a plot, one Triton log per configuration).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resnext_triton.bench import machine
from resnext_triton.bench.perf import (
    PROTOCOLS,
    MeasureSettings,
    PerfAnalyzerError,
    PerfPoint,
    best_point,
    find_perf_analyzer,
    perf_analyzer_version,
    write_input_data,
)
from resnext_triton.bench.report import markdown_table, plot_throughput_vs_latency, served_table
from resnext_triton.bench.serving import local_triton
from resnext_triton.bench.sweep import (
    RESULTS_DIR,
    ROOT,
    add_measure_arguments,
    int_list,
    measure_settings,
    preprocess_photos,
    run_served,
    settings_text,
    stop_on_sigterm,
)
from resnext_triton.spec import Format, ModelSpec

log = logging.getLogger(__name__)

EXPORT_SCRIPT = "export/export.py"


@dataclass(frozen=True)
class Candidate:
    """One configuration to try."""

    instances: int
    max_batch_size: int
    queue_delay_us: int

    @property
    def label(self) -> str:
        """A short name: ``i2-mb8-d5000``."""
        return f"i{self.instances}-mb{self.max_batch_size}-d{self.queue_delay_us}"

    def export_args(self, fmt: Format, repo: Path) -> list[str]:
        """The exporter arguments that write this configuration into ``repo``."""
        return ["--configs-only", "--formats", fmt.value, "--out", str(repo), "--cpu-instances", str(self.instances),
                "--max-batch-size", str(self.max_batch_size), "--queue-delay-us", str(self.queue_delay_us)]


@dataclass
class CandidateResult:
    """The points measured for one candidate and its best one within the budget."""

    candidate: Candidate
    points: list[PerfPoint] = field(default_factory=list)
    best: PerfPoint | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"candidate": asdict(self.candidate), "label": self.candidate.label, "error": self.error,
                "seconds": self.seconds, "best": self.best.to_dict() if self.best else None,
                "points": [p.to_dict() for p in self.points]}


def build_parser() -> argparse.ArgumentParser:
    """The ``bench/config_search.py`` command line."""
    parser = argparse.ArgumentParser(
        prog="bench/config_search.py",
        description="Search CPU instance count x max batch size x queue delay for the Triton config with the best "
        "throughput under a p95 latency budget on this host, and print the export command that applies it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--repo", type=Path, default=ROOT / "model_repository",
                        help="exported model repository (only a scratch copy is modified)")
    parser.add_argument("--model", default=ModelSpec().model_name(Format.ONNX), help="model to tune")
    parser.add_argument("--p95-budget-ms", type=float, required=True, help="p95 latency budget per request")
    grid = parser.add_argument_group("search grid")
    grid.add_argument("--instances", type=int_list, default=[1, 2], help="CPU instance counts")
    grid.add_argument("--max-batch-sizes", type=int_list, default=[1, 4, 8], help="max_batch_size values")
    grid.add_argument("--queue-delays-us", type=_delays, default=[0, 5000],
                      help="dynamic batcher max_queue_delay_microseconds values")
    load = parser.add_argument_group("load")
    load.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    load.add_argument("-b", "--batch-size", type=int, default=1, help="images per request")
    load.add_argument("-c", "--concurrency", type=int_list, default=[1, 2, 4], help="concurrency levels")
    add_measure_arguments(parser)
    parser.add_argument("--server-timeout", type=float, default=300.0, help="seconds to wait for Triton to be ready")
    parser.add_argument("--scratch", type=Path, help="scratch repository directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _delays(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return list(dict.fromkeys(values))


def model_format(model: str, spec: ModelSpec) -> Format:
    """The format of a model name such as ``resnext101_32x4d_onnx``.

    Raises:
        ValueError: if the name belongs to no CPU-servable format of ``spec``.
    """
    for fmt in (Format.ONNX, Format.TORCHSCRIPT):
        if spec.model_name(fmt) == model:
            return fmt
    raise ValueError(f"{model} is not the ONNX or TorchScript model of {spec.variant} (TensorRT needs a GPU)")


def scratch_copy(repo: Path, model: str, target: Path) -> Path:
    """Copy one model directory to ``target`` (newest version only; model files hard-linked when possible).

    The exporter's ``--configs-only`` replaces config files by rename, so hard-linked model files
    are never written through.

    Raises:
        ValueError: if the model has no exported version.
    """
    from resnext_triton.triton.repository import latest_version

    source = repo / model
    version = latest_version(source)
    if version is None:
        raise ValueError(f"{source} has no exported version (run export/export.py)")
    dest = target / model
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=lambda d, names: [n for n in names if n.isdigit() and Path(d) == source
                                                          and n != version.name])

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.rmtree(dest / version.name)
    shutil.copytree(version, dest / version.name, copy_function=link_or_copy)
    return dest


def apply_configs(candidate: Candidate, fmt: Format, repo: Path) -> list[str]:
    """Run ``export/export.py --configs-only`` for a candidate on ``repo``; returns the command.

    Raises:
        RuntimeError: if the exporter fails.
    """
    cmd = [sys.executable, str(ROOT / EXPORT_SCRIPT), *candidate.export_args(fmt, repo)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{EXPORT_SCRIPT} --configs-only failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return cmd


def candidates(instances: Sequence[int], max_batch_sizes: Sequence[int], delays: Sequence[int]) -> list[Candidate]:
    """The grid, without the combinations that cannot differ: max batch size 1 with a queue delay.

    A batch of one is full as soon as a request arrives, so the batcher never waits for a second.
    """
    grid = [Candidate(i, b, d) for i, b, d in itertools.product(instances, max_batch_sizes, delays)]
    smallest_delay = min(delays) if delays else 0
    return [c for c in grid if c.max_batch_size > 1 or c.queue_delay_us == smallest_delay]


def search(args: argparse.Namespace, fmt: Format, scratch: Path, run_dir: Path, settings: MeasureSettings,
           input_data: Path) -> list[CandidateResult]:
    """Measure every candidate of the grid; each gets a fresh Triton."""
    from resnext_triton.triton.server import ServerError

    results = []
    grid = candidates(args.instances, args.max_batch_sizes, args.queue_delays_us)
    for n, candidate in enumerate(grid, 1):
        instances, max_batch, delay = candidate.instances, candidate.max_batch_size, candidate.queue_delay_us
        result = CandidateResult(candidate)
        results.append(result)
        print(f"[{n}/{len(grid)}] {candidate.label}: {instances} instance(s), max_batch_size {max_batch}, "
              f"queue delay {delay} us")
        if max_batch < args.batch_size:
            result.error = f"max_batch_size {max_batch} < request batch {args.batch_size}"
            print(f"  skipped: {result.error}")
            continue
        start = time.perf_counter()
        try:
            apply_configs(candidate, fmt, scratch)
            server_dir = run_dir / "servers" / candidate.label
            with local_triton(scratch, [args.model], run_dir=server_dir, timeout_s=args.server_timeout) as endpoints:
                result.points = run_served([args.model], endpoints, [args.protocol], [args.batch_size],
                                           args.concurrency, settings, run_dir / "raw", input_data=input_data,
                                           config=candidate.label)
        except (RuntimeError, ServerError, subprocess.TimeoutExpired) as exc:
            result.error = str(exc)
            print(f"  FAILED: {exc}")
        result.seconds = time.perf_counter() - start
        result.best = best_point(result.points, p95_budget_ms=args.p95_budget_ms, prefer_stable=True)
        if result.best:
            print(f"  best within {args.p95_budget_ms:g} ms: {result.best.throughput:.2f} img/s at concurrency "
                  f"{result.best.concurrency} (p95 {result.best.p95_ms:.1f} ms)")
        elif not result.error:
            print(f"  no point within the p95 budget of {args.p95_budget_ms:g} ms")
    return results


def winner(results: Sequence[CandidateResult]) -> CandidateResult | None:
    """The candidate with the highest in-budget throughput (ties: fewer instances, smaller batch, less delay)."""

    def rank(r: CandidateResult) -> tuple[float, int, int, int]:
        c = r.candidate
        return (r.best.throughput or 0.0 if r.best else 0.0, -c.instances, -c.max_batch_size, -c.queue_delay_us)

    return max((r for r in results if r.best is not None), key=rank, default=None)


def apply_command(candidate: Candidate, fmt: Format, repo: Path) -> str:
    """The command that writes the winning configuration into the user's repository."""
    try:
        shown = repo.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = repo
    return shlex.join(["python", EXPORT_SCRIPT, *candidate.export_args(fmt, Path(shown))])


def write_outputs(run_dir: Path, meta: dict[str, Any], results: Sequence[CandidateResult], best: CandidateResult | None,
                  command: str | None, *, plot: bool) -> None:
    """results.json, summary.md and the plot of a search."""
    data = {**meta, "candidates": [r.to_dict() for r in results], "winner": best.candidate.label if best else None,
            "apply_command": command}
    (run_dir / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    rows = []
    for r in results:
        b = r.best
        rows.append([r.candidate.label, str(r.candidate.instances), str(r.candidate.max_batch_size),
                     str(r.candidate.queue_delay_us),
                     f"{b.throughput:.2f}" if b and b.throughput else "-", f"{b.p95_ms:.1f}" if b and b.p95_ms else "-",
                     str(b.concurrency) if b else "-", r.error or ("" if b else "nothing within budget")])
    header = ["config", "instances", "max batch", "queue delay us", "best img/s", "p95 ms", "at concurrency", "note"]
    points = [p for r in results for p in r.points]
    m = meta["machine"]
    lines = [f"# config search {meta['run']}", "", f"Command: `{meta['command']}`", "",
             f"- Machine: {m['cpu']}, {m['cores']} usable cores",
             f"- Load before: {meta['load_before']}",
             f"- Load during: {meta['load_during']}",
             f"- Load after: {meta['load_after']}",
             f"- Model {meta['model']}, {meta['protocol']}, batch {meta['batch']} per request, concurrency "
             f"{meta['concurrency']}, p95 budget {meta['p95_budget_ms']:g} ms",
             f"- perf_analyzer: {meta['settings']}", "", markdown_table(header, rows), ""]
    lines += [f"Best: **{best.candidate.label}**, {best.best.throughput:.2f} img/s at p95 {best.best.p95_ms:.1f} ms"
              if best and best.best else "Best: none within the budget", ""]
    if command:
        lines += ["Apply it:", "", "```", command, "```", ""]
    lines += ["## All points", "", served_table(points), ""]
    (run_dir / "summary.md").write_text("\n".join(lines), encoding="utf-8")
    if plot and any(p.ok for p in points):
        plot_throughput_vs_latency(points, run_dir / "throughput_vs_p95.png",
                                   title=f"config search: {meta['model']}, batch {meta['batch']} per request")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; 0 when a configuration met the budget, 1 when none did, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("resnext_triton").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    from resnext_triton.samples import sample_photos

    spec = ModelSpec()
    try:
        if args.p95_budget_ms <= 0 or args.batch_size < 1:
            raise ValueError("--p95-budget-ms must be > 0 and --batch-size >= 1")
        fmt = model_format(args.model, spec)
        settings = measure_settings(args)
        binary = find_perf_analyzer()
        photos = sample_photos()
        if not photos:
            raise ValueError("no sample photos (install matplotlib / scikit-image: scripts/bootstrap.py)")
    except (ValueError, PerfAnalyzerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = _run_dir(args.out)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "run": run_dir.name, "command": shlex.join(["python", "bench/config_search.py",
                                                     *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine.machine_info(), "load_before": machine.LoadSnapshot.now().line(),
        "perf_analyzer": perf_analyzer_version(binary), "model": args.model, "protocol": args.protocol,
        "batch": args.batch_size, "concurrency": args.concurrency, "p95_budget_ms": args.p95_budget_ms,
        "settings": settings_text(settings),
    }
    print(f"run {run_dir}\nload: {meta['load_before']}")
    input_data = write_input_data(preprocess_photos(photos, spec), spec.input_name, run_dir / "input_data.json")
    with _scratch(args.scratch) as scratch:
        try:
            scratch_copy(args.repo, args.model, scratch)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with machine.LoadMonitor() as monitor:
            results = search(args, fmt, scratch, run_dir, settings, input_data)
    meta.update(load_after=machine.LoadSnapshot.now().line(), seconds=time.perf_counter() - started,
                load_during=monitor.summary(), load_samples=monitor.to_dict())
    best = winner(results)
    command = apply_command(best.candidate, fmt, args.repo) if best else None
    write_outputs(run_dir, meta, results, best, command, plot=not args.no_plot)
    print(f"\nwrote {run_dir / 'summary.md'}")
    if best is None or best.best is None:
        print(f"no configuration kept p95 within {args.p95_budget_ms:g} ms; raise --p95-budget-ms or lower concurrency")
        return 1
    b = best.best
    print(f"best within p95 {args.p95_budget_ms:g} ms: {best.candidate.label} -- {b.throughput:.2f} img/s, "
          f"p95 {b.p95_ms:.1f} ms at concurrency {b.concurrency} ({args.protocol}, batch {args.batch_size})")
    print("apply it (rewrites config.pbtxt and configs/cpu.pbtxt; the GPU config gets the same max batch size "
          "and queue delay):")
    print(f"  {command}")
    return 0


def _run_dir(out: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out / f"config-search-{stamp}"
    n = 1
    while run_dir.exists():
        run_dir = out / f"config-search-{stamp}-{n}"
        n += 1
    (run_dir / "raw").mkdir(parents=True)
    return run_dir


@contextlib.contextmanager
def _scratch(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="resnext-config-search-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
