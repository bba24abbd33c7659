"""Command-line pieces every client command shares (classify, evaluate, embed, the demo page)."""

from __future__ import annotations

import argparse
import math

from resnext_triton.client.transport import DEFAULT_PORTS, PROTOCOLS


def positive_int(text: str) -> int:
    """Argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """Argparse type: a finite number > 0."""
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_target_options(group: argparse._ArgumentGroup, *, model_help: str) -> None:
    """``-u/--url``, ``-i/--protocol`` and ``-m/--model``: which Triton, how, and which model."""
    group.add_argument(
        "-u",
        "--url",
        default=None,
        help=f"Triton host:port (default: 127.0.0.1:{DEFAULT_PORTS['grpc']} for grpc, "
        f"127.0.0.1:{DEFAULT_PORTS['http']} for http)",
    )
    group.add_argument("-i", "--protocol", choices=PROTOCOLS, default="grpc", help="protocol (default: grpc)")
    group.add_argument("-m", "--model", default=None, help=model_help)
