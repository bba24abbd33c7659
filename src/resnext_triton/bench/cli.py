"""Command-line plumbing shared by the ``bench/`` commands.

Argument types (comma-separated integers and names), the option groups both commands take
(perf_analyzer measurement, output), run directories, the command line as a user typed it, the
sample photos, logging set-up and SIGTERM handling. The commands themselves are
:mod:`resnext_triton.bench.sweep` and :mod:`resnext_triton.bench.config_search`.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from resnext_triton.bench.perf import MeasureSettings
from resnext_triton.bench.report import RESULTS_FILE, SUMMARY_FILE, write_json

ROOT = Path(__file__).resolve().parents[3]
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_REPO = ROOT / "model_repository"
EXIT_USAGE = 2
Echo = Callable[[str], None]


def _integers(text: str, minimum: int, expected: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return list(dict.fromkeys(values))


def positive_int(text: str) -> int:
    """One integer >= 1 (an argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (positive, in order, no duplicates).

    Raises:
        argparse.ArgumentTypeError: on a non-integer or a value below 1.
    """
    return _integers(text, 1, "positive integers")


def delay_list(text: str) -> list[int]:
    """``"0,5000"`` -> ``[0, 5000]`` (integers >= 0, in order, no duplicates).

    Raises:
        argparse.ArgumentTypeError: on a non-integer or a negative value.
    """
    return _integers(text, 0, "integers >= 0")


def name_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type for a comma-separated subset of ``choices``."""

    def parse(text: str) -> list[str]:
        values = [part.strip().lower() for part in text.split(",") if part.strip()]
        bad = [v for v in values if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(choices)}")
        return list(dict.fromkeys(values))

    return parse


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser whose ``--help`` shows every default."""
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


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


def add_output_arguments(parser: argparse.ArgumentParser, *, group: str | None = None,
                         out_help: str = "results directory") -> None:
    """``--out`` and ``--no-plot`` (in argument group ``group`` when given), then ``-v``."""
    target = parser.add_argument_group(group) if group else parser
    target.add_argument("--out", type=Path, default=RESULTS_DIR, help=out_help)
    target.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def measure_settings(args: argparse.Namespace) -> MeasureSettings:
    """The :class:`MeasureSettings` of parsed arguments."""
    return MeasureSettings(window_images=args.window_images, min_requests=args.min_requests,
                           stability_percentage=args.stability_percentage, max_trials=args.max_trials,
                           timeout_s=args.perf_timeout)


def settings_text(s: MeasureSettings) -> str:
    """How perf_analyzer decided each point was measured, in words."""
    return (f"count_windows, >= max(ceil({s.window_images} / batch), 2 x concurrency, {s.min_requests}) requests per "
            "window, "
            f"stability {s.stability_percentage:g}% over 3 windows on p{s.percentile} and throughput, "
            f"max {s.max_trials} windows")


def command_line(argv: Sequence[str] | None, script: str) -> str:
    """The command as a user would type it."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", script, *args])


def new_run_dir(out: Path, prefix: str = "") -> Path:
    """``out/<prefix><YYYYmmdd-HHMMSS>`` with a ``raw/`` inside (a suffix is added if it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out / f"{prefix}{stamp}"
    n = 1
    while run_dir.exists():
        run_dir = out / f"{prefix}{stamp}-{n}"
        n += 1
    (run_dir / "raw").mkdir(parents=True)
    return run_dir


def require_photos() -> list[Path]:
    """The sample photos every benchmark runs on.

    Raises:
        ValueError: if none is installed.
    """
    from resnext_triton.samples import sample_photos

    found = sample_photos()
    if not found:
        raise ValueError("no sample photos (install matplotlib / scikit-image: scripts/bootstrap.py)")
    return found


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that ``finally`` blocks stop the Triton a run started."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def start_command(verbose: bool) -> None:
    """What a command does first: SIGTERM handling, and warnings (debug with ``verbose``) on stderr."""
    stop_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("resnext_triton").setLevel(logging.DEBUG if verbose else logging.WARNING)


def error(message: object, code: int = EXIT_USAGE) -> int:
    """Print ``error: message`` on stderr; returns ``code`` (a usage error by default)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def run_measurement(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    script: str,
    prefix: str,
    measure: Callable[[argparse.Namespace, Path, list[Path]], dict[str, Any]],
    summary: Callable[[dict[str, Any], str], str],
) -> int:
    """Run a one-run command whose arguments are parsed; returns the exit status.

    The photos, a run directory, ``measure``, then ``results.json`` and ``summary.md`` written and
    the summary printed.
    """
    try:
        photos = require_photos()
    except ValueError as exc:
        return error(exc)
    run_dir = new_run_dir(args.out, prefix)
    command = command_line(argv, script)
    print(f"{command}\nresults in {run_dir}", flush=True)
    try:
        results = measure(args, run_dir, photos)
    except Exception as exc:  # a server that fails to start, a missing model, a failing quantizer: one line
        return error(exc, code=1)
    write_json(run_dir / RESULTS_FILE, results)
    text = summary(results, command)
    (run_dir / SUMMARY_FILE).write_text(text, encoding="utf-8")
    print("\n" + text)
    return 0
