"""``python bench/gpu/prepare.py``: write the GPU carry on a CPU host (see :mod:`.gpu_carry`).

The wheels are taken from ``--wheels`` (default ``$RESNEXT_TRITON_CACHE/wheels``), downloaded
there with ``pip download --no-deps`` when missing. The carry must travel with the working tree in
one device call of at most 64 MiB: the command fails when the archive plus the working tree that
travels with it (tracked and untracked-not-ignored files) exceed that.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from resnext_triton.bench.gpu_carry import (
    CARRY_LIMIT_BYTES,
    CLIENT_DIR,
    DEFAULT_PYTHON,
    DEFAULT_XZ_PRESET,
    PYTHON_DIR,
    ROOT,
    SYSTEM_LIBB64,
    TRITON_DIR,
    WHEEL_LIBS,
    CarryError,
    CarryPlan,
    fetch_wheels,
    plan_carry,
    travelling_bytes,
    wheel_requirements,
    write_carry,
)
from resnext_triton.bench.gpu_elf import ElfError

MIB = 2**20


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``bench/gpu/prepare.py``."""
    parser = argparse.ArgumentParser(
        prog="bench/gpu/prepare.py",
        description="Put what a bare GPU machine needs to serve and measure the model (Triton with its Python "
        "backend, perf_analyzer, tritonclient) into one git-ignored folder under 64 MiB.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-carry", help="the carry folder (git-ignored)")
    parser.add_argument("--python", default=DEFAULT_PYTHON,
                        help="Python version of the GPU machine (the Python backend stub to carry)")
    parser.add_argument("--wheels", type=Path, help="where the wheels are kept (default: $RESNEXT_TRITON_CACHE/wheels)")
    parser.add_argument("--no-download", action="store_true", help="use only the wheels already in --wheels")
    parser.add_argument("--xz-preset", type=int, default=DEFAULT_XZ_PRESET, choices=range(10), metavar="0-9",
                        help="xz compression preset")
    parser.add_argument("--libb64", type=Path, default=SYSTEM_LIBB64,
                        help="libb64.so.0d for perf_analyzer (missing: the copy the pytriton wheel bundles)")
    return parser


def describe(plan: CarryPlan) -> list[str]:
    """What the plan carries, in three lines."""
    def size(prefix: str) -> float:
        return sum(f.size for f in plan.files if f.arcname.startswith(prefix)) / 1e6

    libs = len(plan.names(f"{TRITON_DIR}/{WHEEL_LIBS}/"))
    return [
        f"  triton: tritonserver, the Python backend, its stub for Python {plan.python}, {libs} bundled "
        f"libraries ({size(TRITON_DIR + '/'):.1f} MB)",
        f"  client: perf_analyzer, libb64.so.0d, libcudart.so.12 ({size(CLIENT_DIR + '/'):.1f} MB)",
        f"  python: tritonclient, {len(plan.names(PYTHON_DIR + '/'))} files ({size(PYTHON_DIR + '/'):.1f} MB)",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the carry; 0 when it fits, 1 when it cannot be made or does not fit, 2 for usage errors."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.wheels is None:
        from resnext_triton.weights import cache_dir

        args.wheels = cache_dir() / "wheels"
    try:
        wheels = fetch_wheels(wheel_requirements(), args.wheels, download=not args.no_download)
        print(f"wheels in {args.wheels}: {', '.join(sorted(p.name for p in wheels.values()))}")
        plan = plan_carry(wheels, python=args.python, libb64=args.libb64)
    except (CarryError, ElfError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"carry ({len(plan.files)} files, {plan.total_bytes / 1e6:.1f} MB):", *describe(plan), sep="\n")
    result = write_carry(plan, args.out, preset=args.xz_preset)
    how = "unchanged, kept" if result.reused else f"xz -{args.xz_preset}, {result.seconds:.0f} s"
    print(f"{result.archive}: {result.archive_bytes / MIB:.1f} MiB ({how})")
    tree = travelling_bytes(ROOT, exclude=args.out)
    carried = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    if tree is None:
        print("working tree: not measured (no git); the carry alone must stay under 64 MiB")
        tree = 0
    total = carried + tree
    print(f"one device call carries {carried / MIB:.1f} MiB ({args.out.name}) + {tree / MIB:.1f} MiB (working tree) "
          f"= {total / MIB:.1f} MiB of {CARRY_LIMIT_BYTES / MIB:.0f} MiB")
    if total > CARRY_LIMIT_BYTES:
        print(f"error: over the {CARRY_LIMIT_BYTES / MIB:.0f} MiB a device call carries", file=sys.stderr)
        return 1
    return 0
