"""``bench/config_search.py``: the Triton config that serves most images/s within a p95 budget here.

For every combination of CPU instance count, max batch size and dynamic-batcher queue delay it
rewrites the model's configs in a scratch copy of the repository with the exporter's own command
(``export/export.py --configs-only ...``, so what is measured is exactly what that command
writes; :mod:`resnext_triton.bench.candidates`), starts a local Triton on that copy (free
127.0.0.1 ports), sweeps concurrency with perf_analyzer and stops it. It reports the configuration
with the best throughput whose p95 latency stays within ``--p95-budget-ms`` (stable perf_analyzer
measurements first), and prints the one command that applies it.

Results go to ``bench/results/config-search-<timestamp>/`` (raw perf_analyzer CSVs and logs,
``results.json``, ``summary.md``, a plot, one Triton log per configuration).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnext_triton.bench import cli, machine, perf
from resnext_triton.bench.candidates import (
    CandidateResult,
    apply_command,
    apply_configs,
    candidates,
    model_format,
    scratch_copy,
    scratch_repository,
    winner,
)
from resnext_triton.bench.perf_csv import PerfAnalyzerError, best_point
from resnext_triton.bench.report import (
    PLOT_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    markdown_table,
    plot_throughput_vs_latency,
    served_table,
    write_json,
)
from resnext_triton.bench.served import preprocess_photos, run_served
from resnext_triton.bench.serving import local_triton
from resnext_triton.spec import Format, ModelSpec

SCRIPT = "bench/config_search.py"


def build_parser() -> argparse.ArgumentParser:
    """The ``bench/config_search.py`` command line."""
    parser = cli.new_parser(
        SCRIPT,
        "Search CPU instance count x max batch size x queue delay for the Triton config with the best "
        "throughput under a p95 latency budget on this host, and print the export command that applies it.",
    )
    parser.add_argument("--repo", type=Path, default=cli.DEFAULT_REPO,
                        help="exported model repository (only a scratch copy is modified)")
    parser.add_argument("--model", default=ModelSpec().model_name(Format.ONNX), help="model to tune")
    parser.add_argument("--p95-budget-ms", type=float, required=True, help="p95 latency budget per request")
    grid = parser.add_argument_group("search grid")
    grid.add_argument("--instances", type=cli.int_list, default=[1, 2], help="CPU instance counts")
    grid.add_argument("--max-batch-sizes", type=cli.int_list, default=[1, 4, 8], help="max_batch_size values")
    grid.add_argument("--queue-delays-us", type=cli.delay_list, default=[0, 5000],
                      help="dynamic batcher max_queue_delay_microseconds values")
    load = parser.add_argument_group("load")
    load.add_argument("--protocol", choices=perf.PROTOCOLS, default="grpc")
    load.add_argument("-b", "--batch-size", type=int, default=1, help="images per request")
    load.add_argument("-c", "--concurrency", type=cli.int_list, default=[1, 2, 4], help="concurrency levels")
    cli.add_measure_arguments(parser)
    parser.add_argument("--server-timeout", type=float, default=300.0, help="seconds to wait for Triton to be ready")
    parser.add_argument("--scratch", type=Path, help="scratch repository directory (default: a temporary one)")
    cli.add_output_arguments(parser)
    return parser


def search(args: argparse.Namespace, fmt: Format, scratch: Path, run_dir: Path, settings: perf.MeasureSettings,
           input_data: Path) -> list[CandidateResult]:
    """Measure every candidate of the grid; each gets a fresh Triton."""
    from resnext_triton.triton.local import ServerError

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


def write_outputs(run_dir: Path, meta: dict[str, Any], results: Sequence[CandidateResult], best: CandidateResult | None,
                  command: str | None, *, plot: bool) -> None:
    """results.json, summary.md and the plot of a search."""
    data = {**meta, "candidates": [r.to_dict() for r in results], "winner": best.candidate.label if best else None,
            "apply_command": command}
    write_json(run_dir / RESULTS_FILE, data)
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
    (run_dir / SUMMARY_FILE).write_text("\n".join(lines), encoding="utf-8")
    if plot and any(p.ok for p in points):
        plot_throughput_vs_latency(points, run_dir / PLOT_FILE,
                                   title=f"config search: {meta['model']}, batch {meta['batch']} per request")


def _print_best(args: argparse.Namespace, best: CandidateResult | None, command: str | None) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; 0 when a configuration met the budget, 1 when none did, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    cli.start_command(args.verbose)
    spec = ModelSpec()
    try:
        if args.p95_budget_ms <= 0 or args.batch_size < 1:
            raise ValueError("--p95-budget-ms must be > 0 and --batch-size >= 1")
        fmt = model_format(args.model, spec)
        settings = cli.measure_settings(args)
        binary = perf.find_perf_analyzer()
        photos = cli.require_photos()
    except (ValueError, PerfAnalyzerError) as exc:
        return cli.error(exc)
    run_dir = cli.new_run_dir(args.out, "config-search-")
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "run": run_dir.name, "command": cli.command_line(argv, SCRIPT),
        "machine": machine.machine_info(), "load_before": machine.LoadSnapshot.now().line(),
        "perf_analyzer": perf.perf_analyzer_version(binary), "model": args.model, "protocol": args.protocol,
        "batch": args.batch_size, "concurrency": args.concurrency, "p95_budget_ms": args.p95_budget_ms,
        "settings": cli.settings_text(settings),
    }
    print(f"run {run_dir}\nload: {meta['load_before']}")
    input_data = perf.write_input_data(preprocess_photos(photos, spec), spec.input_name, run_dir / "input_data.json")
    with scratch_repository(args.scratch) as scratch:
        try:
            scratch_copy(args.repo, args.model, scratch)
        except (ValueError, OSError) as exc:
            return cli.error(exc)
        with machine.LoadMonitor() as monitor:
            results = search(args, fmt, scratch, run_dir, settings, input_data)
    meta.update(load_after=machine.LoadSnapshot.now().line(), seconds=time.perf_counter() - started,
                load_during=monitor.summary(), load_samples=monitor.to_dict())
    best = winner(results)
    command = apply_command(best.candidate, fmt, args.repo) if best else None
    write_outputs(run_dir, meta, results, best, command, plot=not args.no_plot)
    print(f"\nwrote {run_dir / SUMMARY_FILE}")
    return _print_best(args, best, command)


if __name__ == "__main__":
    sys.exit(main())
