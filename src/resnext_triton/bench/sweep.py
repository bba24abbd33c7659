"""``bench/perf_sweep.py``: perf_analyzer sweeps of the served models beside in-process baselines.

One run writes ``bench/results/<timestamp>/``:

* ``raw/<model>_<protocol>_b<batch>_c<concurrency>.csv`` -- perf_analyzer's own CSV (``-f``,
  ``--verbose-csv``) and ``.log`` -- its command line and console output;
* ``input_data.json`` -- the real photos, preprocessed, as perf_analyzer ``--input-data``;
* ``results.json`` -- every number below, the machine, the load and the command;
* ``summary.md`` -- the tables; ``throughput_vs_p95.png`` -- the plot; ``triton.log``.

The baselines run on the same photos (:func:`resnext_triton.samples.sample_photos`, round-robin):
the torch.hub example loop, TorchScript and ONNX Runtime in-process, ``client/classify.py`` end to
end over a folder of the photos, and the client's preprocessing threaded and single-threaded
(:mod:`resnext_triton.bench.baseline_suite`). The served points come from
:mod:`resnext_triton.bench.served`, the ratios from :mod:`resnext_triton.bench.ratios`, the files
from :mod:`resnext_triton.bench.sweep_report`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnext_triton.bench import cli, machine, perf
from resnext_triton.bench.baseline_suite import BASELINES, BaselineReport, run_baselines
from resnext_triton.bench.perf_csv import PerfAnalyzerError, PerfPoint
from resnext_triton.bench.ratios import Ratio, compute_ratios
from resnext_triton.bench.report import baseline_table, served_table
from resnext_triton.bench.served import default_models, preprocess_photos, run_served
from resnext_triton.bench.serving import EndpointError, Endpoints, endpoints_from_urls, local_triton
from resnext_triton.bench.sweep_report import write_results
from resnext_triton.spec import ModelSpec

SCRIPT = "bench/perf_sweep.py"


def build_parser() -> argparse.ArgumentParser:
    """The ``bench/perf_sweep.py`` command line."""
    parser = cli.new_parser(
        SCRIPT,
        "Sweep concurrency and batch size with perf_analyzer over gRPC and HTTP for each served model, "
        "time in-process baselines on the same real photos, and write CSVs, a markdown summary and a plot.",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--repo", type=Path, default=cli.DEFAULT_REPO,
                        help="model repository to serve (and to load in-process baselines from)")
    server.add_argument("--models", type=lambda s: [m for m in s.split(",") if m],
                        help="comma-separated model names (default: the ONNX and TorchScript models that are ready)")
    server.add_argument("--server-timeout", type=float, default=300.0, help="seconds to wait for Triton to be ready")
    parser.add_argument("-u", "--url", action="append", default=[], metavar="PROTOCOL://HOST:PORT",
                        help="benchmark a running server (grpc://127.0.0.1:8001, http://127.0.0.1:8000; repeatable) "
                        "instead of starting a local Triton on free loopback ports")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--protocols", type=cli.name_list(perf.PROTOCOLS), default=list(perf.PROTOCOLS),
                       help="grpc,http")
    sweep.add_argument("-b", "--batch-sizes", type=cli.int_list, default=[1, 4, 8], help="client batch sizes")
    sweep.add_argument("-c", "--concurrency", type=cli.int_list, default=[1, 2, 4], help="concurrency levels")
    cli.add_measure_arguments(parser)
    base = parser.add_argument_group("baselines")
    base.add_argument("--baselines", type=cli.name_list(BASELINES), default=list(BASELINES),
                      help=f"which to run: {','.join(BASELINES)}")
    base.add_argument("--no-baselines", action="store_true", help="perf_analyzer sweep only")
    base.add_argument("--baseline-batch", type=int, default=8,
                      help="batch of the torch.hub loop and classify.py (the client's default)")
    base.add_argument("--baseline-images", type=int, default=48,
                      help="photos (round-robin over the samples) per baseline and batch size")
    base.add_argument("--preprocess-images", type=int, default=192, help="photos for the preprocessing comparison")
    base.add_argument("--sgemm-size", type=int, default=2048, help="matrix size of the SGEMM ceiling measurement")
    cli.add_output_arguments(parser, group="output", out_help="results directory (a timestamped run goes in it)")
    return parser


def _validate(args: argparse.Namespace) -> None:
    if args.baseline_batch < 1 or args.baseline_images < 1 or args.preprocess_images < 1:
        raise ValueError("--baseline-batch, --baseline-images and --preprocess-images must be >= 1")
    if not args.url and not args.repo.is_dir():
        raise ValueError(f"model repository {args.repo} does not exist (export one with export/export.py, "
                         "or pass -u URLs of a running server)")


def _measure(args: argparse.Namespace, endpoints: Endpoints, spec: ModelSpec, photos: list[Path],
             run_dir: Path, settings: perf.MeasureSettings) -> tuple[list[PerfPoint], BaselineReport]:
    inputs = preprocess_photos(photos, spec)
    input_data = perf.write_input_data(inputs, spec.input_name, run_dir / "input_data.json")
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


def _print_outcome(points: Sequence[PerfPoint], base: BaselineReport, ratios: Sequence[Ratio]) -> None:
    print("\n" + served_table(points) + "\n\n" + baseline_table(base.results))
    print("\nratios:")
    for ratio in ratios:
        print("  " + ratio.line())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; returns 0 when every perf_analyzer point and baseline produced a number."""
    args = build_parser().parse_args(argv)
    cli.start_command(args.verbose)
    try:
        _validate(args)
        settings = cli.measure_settings(args)
        endpoints = endpoints_from_urls(args.url) if args.url else None
        binary = perf.find_perf_analyzer()
        photos = cli.require_photos()
    except (ValueError, EndpointError, PerfAnalyzerError) as exc:
        return cli.error(exc)
    spec = ModelSpec()
    run_dir = cli.new_run_dir(args.out)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "run": run_dir.name, "command": cli.command_line(argv, SCRIPT), "machine": machine.machine_info(),
        "load_before": machine.LoadSnapshot.now().line(), "photos": [p.name for p in photos],
        "perf_analyzer": perf.perf_analyzer_version(binary), "settings": cli.settings_text(settings),
    }
    print(f"run {run_dir}\nmachine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores\n"
          f"load: {meta['load_before']}")
    from resnext_triton.triton.local import ServerError

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
        return cli.error(f"{exc}\n{exc.log_tail}", 1)
    except ValueError as exc:
        return cli.error(exc)
    meta.update(triton_version=endpoints.version, load_after=machine.LoadSnapshot.now().line(),
                load_during=monitor.summary(), load_samples=monitor.to_dict(),
                seconds=time.perf_counter() - started, endpoints=endpoints.urls,
                started_locally=endpoints.started_locally)
    ratios = compute_ratios(points, base, spec, args.baseline_batch)
    write_results(run_dir, meta, points, base, ratios, plot=not args.no_plot)
    _print_outcome(points, base, ratios)
    failed = [p for p in points if not p.ok]
    return 1 if failed or base.skipped.get("classify", "").startswith("classify.py exit") else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
