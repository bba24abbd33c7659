"""``demo/app.py``: serve the demo page on 127.0.0.1, talking to a Triton server.

Usage::

    python demo/app.py [--port 7860] [--bind 127.0.0.1] [-u URL] [-i grpc|http] [-m MODEL] [--timeout S]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from resnext_triton.client.options import add_target_options, positive_float
from resnext_triton.demo.service import DEFAULT_REQUEST_TIMEOUT_S, DEFAULT_TIMEOUT_S, DemoService
from resnext_triton.samples import sample_photos

logger = logging.getLogger(__name__)

DEFAULT_PORT = 7860
DEFAULT_BIND = "127.0.0.1"
EXIT_OK = 0
EXIT_CANNOT_SERVE = 1
EXIT_USAGE = 2  # argparse's own


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number (1-65535), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``demo/app.py`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="Serve a Gradio page that classifies photos with ResNeXt101-32x4d on Triton Inference Server.",
    )
    page = parser.add_argument_group("page")
    page.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port of the page (default: {DEFAULT_PORT})")
    page.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="ADDR",
        help=f"address the page listens on (default: {DEFAULT_BIND}; the page has no authentication)",
    )
    server = parser.add_argument_group("Triton")
    add_target_options(server, model_help="model selected when the page opens (default: ONNX, if served)")
    server.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for Triton before the page says it is unreachable (default: {DEFAULT_TIMEOUT_S:g})",
    )
    server.add_argument(
        "--request-timeout",
        type=positive_float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        metavar="S",
        help=f"seconds allowed for one inference request (default: {DEFAULT_REQUEST_TIMEOUT_S:g})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the page until Ctrl-C; returns the exit status (1 if the page cannot be served)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup probes, one line each
    from resnext_triton.demo.page import build_page, launch  # gradio is imported here, after parsing

    try:
        service = DemoService(args.url, args.protocol, timeout_s=args.timeout, request_timeout_s=args.request_timeout)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    samples = sample_photos()
    page = build_page(service, samples, model=args.model)
    print(f"demo page for Triton at {service.where}: http://{args.bind}:{args.port}", file=sys.stderr, flush=True)
    try:
        launch(page, host=args.bind, port=args.port, samples=samples, block=True)
    except OSError as exc:
        reason = "the port is in use" if "empty port" in str(exc) else str(exc)  # gradio's wording for a busy port
        print(f"error: cannot serve the page on {args.bind}:{args.port} (--bind/--port): {reason}", file=sys.stderr)
        return EXIT_CANNOT_SERVE
    finally:
        service.close()
    return EXIT_OK
