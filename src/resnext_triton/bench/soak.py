"""``bench/soak.py``: sustained load on the supervised local Triton, with faults injected on a schedule.

Starts a local Triton (the supervisor and its tritonserver, on free 127.0.0.1 ports, with a private
state directory) serving one model, or attaches to one running for ``--state-dir``; keeps
``--concurrency`` requests in flight for ``--duration`` seconds; every ``--fault-every`` seconds
injects the next fault of ``--faults`` (:mod:`.soak_faults`); samples the memory of the server's
processes; and reports requests sent, failed and recovered, the time to answer again after each
fault, memory over time, and what was left behind after the server it started was stopped
(:mod:`.soak_report`). Exits 1 when a fault was not recovered from within ``--recover-within``, a
request failed outside fault windows, or processes or ``/dev/shm`` regions were left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from resnext_triton.bench.cli import (
    RESULTS_DIR,
    command_line,
    error,
    name_list,
    new_parser,
    new_run_dir,
    require_photos,
    start_command,
)  # fmt: skip
from resnext_triton.bench.soak_faults import FAULTS, FaultError, Target
from resnext_triton.bench.soak_load import Load, RequestLog, Sampler, monotonic_clock
from resnext_triton.bench.soak_report import Fault, SoakResult, write
from resnext_triton.triton.local import procs
from resnext_triton.triton.local.state import default_repository, running_state

log = logging.getLogger(__name__)

SCRIPT = "bench/soak.py"
DEFAULT_MODEL = "resnext101_32x4d_onnx"


def build_parser() -> argparse.ArgumentParser:
    """The ``bench/soak.py`` command line."""
    parser = new_parser(SCRIPT, "Sustained load on the supervised local Triton, with faults injected on a schedule.")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--batch", type=int, default=1, help="images per request")
    parser.add_argument("--faults", type=name_list(list(FAULTS)), default=list(FAULTS),
                        help=f"faults to inject, in turn (comma-separated: {', '.join(FAULTS)})")  # fmt: skip
    parser.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults (0: none)")
    parser.add_argument("--first-fault", type=float, default=30.0, help="seconds of load before the first fault")
    parser.add_argument("--recover-within", type=float, default=180.0,
                        help="seconds within which the service must answer again after a fault")  # fmt: skip
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model under load")
    parser.add_argument("--model-repository", type=Path, default=None,
                        help="repository of the server it starts (default: $RESNEXT_TRITON_MODEL_REPOSITORY "
                             "or model_repository)")  # fmt: skip
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="attach to the local Triton running for this state directory instead of starting one")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the server it starts to be ready")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results go to OUT/soak-<timestamp>/")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


@contextlib.contextmanager
def _server(args: argparse.Namespace) -> Iterator[tuple[Path, str, bool]]:
    """(state dir, HTTP host:port, started here) of the server under test; stops the one it started."""
    if args.state_dir is not None:
        state = running_state(args.state_dir.resolve())
        if state is None:
            raise FaultError(f"no local Triton runs for {args.state_dir}")
        yield args.state_dir.resolve(), state.http_url.removeprefix("http://"), False
        return
    from resnext_triton.triton.local import LocalTriton, ServerConfig

    state_dir = Path(tempfile.mkdtemp(prefix="resnext-soak-"))
    config = ServerConfig(repo=(args.model_repository or default_repository()).resolve(), state_dir=state_dir,
                          http_port=0, grpc_port=0, metrics_port=0, timeout_s=args.timeout,
                          models=(args.model,))  # fmt: skip
    server = LocalTriton(config).start()
    try:
        yield state_dir, server.http_url.removeprefix("http://"), True
    finally:
        server.stop()


def _inject_on_schedule(args: argparse.Namespace, target: Target, now: Callable[[], float]) -> list[Fault]:
    """Inject the faults in turn, every ``--fault-every`` seconds, until ``--duration`` has passed."""
    faults: list[Fault] = []
    next_at = args.first_fault if args.fault_every > 0 and args.faults else float("inf")
    while now() < args.duration:
        if now() >= next_at:
            kind = args.faults[len(faults) % len(args.faults)]
            at = now()
            try:
                faults.append(Fault(at, kind, FAULTS[kind](target)))
            except FaultError as exc:
                faults.append(Fault(at, kind, f"not injected: {exc}", injected=False))
            log.info("%.0f s: %s: %s", at, kind, faults[-1].detail)
            next_at += args.fault_every
        time.sleep(0.2)
    return faults


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> SoakResult:
    """Run one soak and return what it measured."""
    from resnext_triton.preprocess import preprocess_path

    photo = preprocess_path(require_photos()[0]).astype(np.float32)
    batch = np.repeat(photo[None], args.batch, axis=0)
    with _server(args) as (state_dir, http_address, started):
        before = running_state(state_dir)
        clock = monotonic_clock()
        requests = RequestLog()
        sampler = Sampler(state_dir, clock, every_s=args.sample_every)
        load = Load(http_address, args.model, batch, args.concurrency, requests, clock)
        sampler.start()
        load.start()
        try:
            faults = _inject_on_schedule(args, Target(state_dir, args.model), clock)
        finally:
            load.stop()
            sampler.stop()
        after = running_state(state_dir)
    restarts = (after.restarts - before.restarts) if after and before else 0
    reloads = (after.recoveries - before.recoveries) if after and before else 0
    processes, regions = 0, 0
    if started:  # the server it started is stopped now: nothing of it may remain
        processes = len(procs.leftovers(state_dir)[0])
        regions = sum(1 for r in sampler.regions if (procs.SHM_DIR / r).exists())
        shutil.rmtree(state_dir, ignore_errors=True)
    return SoakResult(
        command=command_line(argv, SCRIPT), duration_s=args.duration, concurrency=args.concurrency,
        batch=args.batch, model=args.model, requests=requests.snapshot(), faults=faults, samples=sampler.samples,
        restarts=restarts, reloads=reloads, leftover_processes=processes, leftover_regions=regions,
        regions_seen=len(sampler.regions), recover_within_s=args.recover_within,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; returns 0 when it passed, 1 when it found a problem, 2 on usage errors."""
    args = build_parser().parse_args(argv)
    start_command(args.verbose)
    if not args.verbose:
        log.setLevel(logging.INFO)  # one line per fault while it runs
    if args.duration <= 0 or args.concurrency < 1 or args.batch < 1 or args.sample_every <= 0:
        return error("--duration, --concurrency, --batch and --sample-every must be positive")
    from resnext_triton.triton.local import ServerError

    try:
        result = run(args, argv)
    except (ServerError, FaultError, ValueError) as exc:
        return error(exc, code=1)
    run_dir = new_run_dir(args.out, prefix="soak-")
    summary = write(result, run_dir)
    print(summary.read_text(encoding="utf-8"), end="")
    print(f"results in {run_dir}")
    return 1 if result.problems() else 0
