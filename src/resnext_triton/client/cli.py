"""``classify``: top-k ImageNet classes of images through a ResNeXt model on Triton.

Usage::

    python client/classify.py IMAGE [IMAGE|DIR|GLOB|URL ...] [-u URL] [-i grpc|http] [-m MODEL]
        [-b BATCH] [-k TOPK] [--concurrency N] [--timeout S] [--request-timeout S] [--url-timeout S]
        [--json] [--server-topk]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from typing import TextIO

from PIL import Image

from resnext_triton.client.classifier import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    TritonClassifier,
)
from resnext_triton.client.discovery import ModelInfo
from resnext_triton.client.errors import ClientError
from resnext_triton.client.inputs import DEFAULT_URL_TIMEOUT_S, Source, expand_inputs
from resnext_triton.client.options import add_target_options, positive_float, positive_int
from resnext_triton.client.results import ClassificationResult
from resnext_triton.preprocess import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2  # argparse's own
EXIT_SERVER = 3
EXIT_INTERRUPTED = 130

EPILOG = f"""\
inputs:
  Files are taken whatever their extension; directories are walked recursively (files with an
  image extension Pillow can open; hidden entries skipped; a symbolic link that loops back to a
  directory above it skipped with a warning); quote globs to let the client expand them (**
  recurses); http(s) URLs are downloaded (--url-timeout). Each input is decoded with EXIF
  orientation applied and converted to RGB: transparent images (RGBA, LA, PA, palette with
  transparency) are composited on a WHITE background; grayscale is replicated; CMYK, YCbCr, LAB
  go through Pillow's conversion; 16-bit images are scaled (not clipped) to 8 bits. Then NVIDIA's
  preprocessing: shorter side to 256 (bilinear, antialiased), center crop 224, ImageNet mean/std.

output:
  A table per input (rank, class index, probability, label), or with --json one object per line:
  {{"input": ..., "predictions": [{{"rank": 1, "class_id": ..., "label": ..., "probability": ...,
  "logit": ...}}, ...], "error": null}}; a failed input has "predictions": [] and an error string.
  Probabilities are a float64 softmax over all logits. With --server-topk Triton's classification
  extension picks the top-k: it returns logits, so "probability" is null and "logit" holds the
  value Triton gave.

time limits:
  Each is a total limit, however slowly a server answers: --timeout for the server and model to be
  ready (retries included), --request-timeout for one inference request, --url-timeout for one URL
  download. A request that waits --timeout seconds makes the client probe the server's liveness
  (within --timeout): a server that does not answer ends the run (exit {EXIT_SERVER}) instead of costing
  --request-timeout per batch.

exit status:
  {EXIT_OK}  every input was classified
  {EXIT_INPUT_FAILED}  some inputs failed (each has its own error; the others were classified)
  {EXIT_USAGE}  usage error (bad option), or the project's dependencies are missing (client/classify.py)
  {EXIT_SERVER}  server unreachable within --timeout, lost or stopped answering during the run, model
     missing/not ready/unusable, or a request the model cannot take (e.g. --batch-size above its
     max_batch_size)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``classify`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="classify.py",
        description="Classify images with NVIDIA's ResNeXt101-32x4d served by Triton Inference Server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, directory, quoted glob or http(s) URL")
    server = parser.add_argument_group("server")
    add_target_options(
        server, model_help="model name (default: a ready ResNeXt model from the server's repository index, ONNX first)"
    )
    server.add_argument(
        "--pipeline",
        action="store_true",
        help="send the encoded files to the model's image pipeline (<model>_image), which preprocesses on "
        "the server (automatic when -m names a model that takes encoded files)",
    )
    server.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds in all to wait for the server and model to be ready; also how long a request may wait "
        f"before the server's liveness is probed, and the probe's limit (default: {DEFAULT_TIMEOUT_S:g})",
    )
    server.add_argument(
        "--request-timeout",
        type=positive_float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        metavar="S",
        help=f"seconds allowed for one inference request, in all (default: {DEFAULT_REQUEST_TIMEOUT_S:g})",
    )
    run = parser.add_argument_group("throughput")
    run.add_argument(
        "-b",
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="BATCH",
        help=f"images per request (default: {DEFAULT_BATCH_SIZE}, at most the model's max_batch_size)",
    )
    run.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight (default: {DEFAULT_CONCURRENCY})",
    )
    run.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="decoding/preprocessing threads (default: CPU count, at most 8)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "-k", "--top-k", type=positive_int, default=5, metavar="TOPK", help="classes per input (default: 5)"
    )
    out.add_argument("--json", action="store_true", help="one JSON object per input and line instead of a table")
    out.add_argument(
        "--server-topk",
        action="store_true",
        help="let Triton's classification extension pick the top-k (class_count); "
        "reports Triton's values, which are logits (no probability)",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal for >1 batch)")
    out.add_argument("-q", "--quiet", action="store_true", help="no model and summary lines on stderr")
    out.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images with more pixels (decompression bombs; default: {DEFAULT_MAX_PIXELS:,})",
    )
    inputs.add_argument(
        "--url-timeout",
        type=positive_float,
        default=DEFAULT_URL_TIMEOUT_S,
        metavar="S",
        help=f"seconds allowed to download one URL, in all (default: {DEFAULT_URL_TIMEOUT_S:g})",
    )
    return parser


def format_table(result: ClassificationResult, *, logits: bool = False) -> str:
    """A readable block for one input: its name, then rank, class, probability (or logit), label."""
    lines = [result.input]
    if result.error is not None:
        lines.append(f"  error: {result.error}")
        return "\n".join(lines)
    value = "logit" if logits else "probability"
    lines.append(f"  {'rank':>4}  {'class':>5}  {value:>11}  label")
    for p in result.predictions:
        number = p.logit if logits or p.probability is None else p.probability
        lines.append(f"  {p.rank:>4}  {p.class_id:>5}  {number:>11.4f}  {p.label}")
    return "\n".join(lines)


def format_json(result: ClassificationResult) -> str:
    """One JSON line for one input."""
    return json.dumps(result.to_dict(), ensure_ascii=False)


def describe_model(info: ModelInfo, clf: TritonClassifier) -> str:
    """The one line saying which model answers, how it was picked, and what it takes."""
    if info.takes_bytes:
        return (
            f"model {info.name} ({clf.model_selection}) at {clf.url} over {clf.protocol}: "
            f"{info.input_name} UINT8 encoded files, preprocessed on the server, max_batch_size {info.max_batch_size}"
        )
    shape = "x".join(map(str, info.input_shape))
    return (
        f"model {info.name} ({clf.model_selection}) at {clf.url} over {clf.protocol}: "
        f"{info.input_name} {info.datatype} {info.layout} {shape}, max_batch_size {info.max_batch_size}"
    )


def _run(args: argparse.Namespace, sources: list[Source], out: TextIO, err: TextIO) -> int:
    from tqdm import tqdm

    started = time.perf_counter()
    failed = 0
    with TritonClassifier(
        args.url,
        args.protocol,
        args.model,
        timeout_s=args.timeout,
        request_timeout_s=args.request_timeout,
        max_pixels=args.max_pixels,
        url_timeout_s=args.url_timeout,
        workers=args.workers,
        pipeline=args.pipeline,
    ) as clf:
        info = clf.wait_until_ready()
        if not args.quiet:
            print(describe_model(info, clf), file=err)
        batch_size = clf.resolve_batch_size(args.batch_size)
        results = clf.classify_iter(
            sources,
            top_k=args.top_k,
            batch_size=batch_size,
            concurrency=args.concurrency,
            server_topk=args.server_topk,
        )
        show_bar = len(sources) > batch_size and not args.no_progress
        with tqdm(total=len(sources), unit="img", file=err, disable=None if show_bar else True) as bar:
            for result in results:
                text = format_json(result) if args.json else format_table(result, logits=args.server_topk)
                if bar.disable:
                    print(text, file=out, flush=args.json)
                else:
                    tqdm.write(text, file=out)
                failed += not result.ok
                bar.update(1)
    if not args.quiet:
        elapsed = time.perf_counter() - started
        done = len(sources) - failed
        print(
            f"classified {done} of {len(sources)} inputs ({failed} failed) in {elapsed:.1f} s "
            f"({done / elapsed if elapsed > 0 else 0.0:.1f} img/s)",
            file=err,
        )
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (see the ``--help`` epilog)."""
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    err = err or sys.stderr
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=err,
    )
    # The client enforces its own pixel limit with a clear per-input error (--max-pixels); Pillow's
    # global check is aligned with it so that it never refuses first, and its warning is silenced.
    Image.MAX_IMAGE_PIXELS = args.max_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    sources = list(expand_inputs(args.inputs))
    try:
        return _run(args, sources, out, err)
    except ClientError as exc:  # ServerUnavailable, ModelNotReady, or a request the model cannot take
        print(f"error: {exc}", file=err)
        return EXIT_SERVER
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
