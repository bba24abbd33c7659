"""``embed``: the image embeddings (``FEATURES__1``) of images through a ResNeXt model on Triton.

Usage::

    python client/embed.py IMAGE|DIR|GLOB|URL [...] --out features.npy [-u URL] [-i grpc|http] [-m MODEL]
        [--pipeline] [-b BATCH] [--concurrency N] [--timeout S] [--request-timeout S]

Writes ``features.npy`` (float32, one row per input that succeeded) and ``features.txt`` beside it
(the inputs' names, one per line, in row order); each failed input is named on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image

from resnext_triton.client.classifier import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_S
from resnext_triton.client.cli import EXIT_INPUT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SERVER
from resnext_triton.client.embed import TritonEmbedder, names_path, save_embeddings
from resnext_triton.client.errors import ClientError
from resnext_triton.client.inputs import Source, expand_inputs
from resnext_triton.client.options import add_target_options, positive_float, positive_int
from resnext_triton.preprocess import DEFAULT_MAX_PIXELS

EPILOG = f"""\
output:
  OUT (.npy): float32, shape (inputs that succeeded, feature width), the pooled features before
  the classifier head (2048 for ResNeXt), in input order; OUT with .txt instead of .npy: the
  inputs' names, one per line, row i naming row i. Both files are replaced atomically.

exit status:
  {EXIT_OK}  every input was embedded
  {EXIT_INPUT_FAILED}  some inputs failed (named on stderr; the others were written)
  2  usage error
  {EXIT_SERVER}  server unreachable, lost, or the model missing, not ready, or without a features output
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``embed`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="embed.py",
        description="Write the image embeddings (the pooled features before the classifier head) of images, "
        "computed by a ResNeXt model served by Triton Inference Server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, directory, quoted glob or http(s) URL")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the features file to write (.npy)")
    server = parser.add_argument_group("server")
    add_target_options(server, model_help="model name (default: a ready ResNeXt model, ONNX first)")
    server.add_argument("--pipeline", action="store_true",
                        help="send the encoded files to the model's image pipeline (<model>_image)")
    server.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds in all to wait for the server and model (default: {DEFAULT_TIMEOUT_S:g})")
    server.add_argument("--request-timeout", type=positive_float, default=300.0, metavar="S",
                        help="seconds allowed for one inference request (default: 300)")
    run = parser.add_argument_group("throughput")
    run.add_argument("-b", "--batch-size", type=positive_int, metavar="BATCH",
                     help=f"images per request (default: {DEFAULT_BATCH_SIZE}, at most the model's max_batch_size)")
    run.add_argument("--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY, metavar="N",
                     help=f"requests in flight (default: {DEFAULT_CONCURRENCY})")
    run.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                     help=f"refuse images with more pixels (default: {DEFAULT_MAX_PIXELS:,})")
    out = parser.add_argument_group("messages")
    out.add_argument("-q", "--quiet", action="store_true", help="no model and summary lines on stderr")
    out.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def _run(args: argparse.Namespace, sources: list[Source], err: TextIO) -> int:
    started = time.perf_counter()
    names: list[str] = []
    rows: list[np.ndarray] = []
    failed = 0
    with TritonEmbedder(
        args.url, args.protocol, args.model, timeout_s=args.timeout, request_timeout_s=args.request_timeout,
        max_pixels=args.max_pixels, pipeline=args.pipeline,
    ) as embedder:
        info = embedder.wait_until_ready()
        if not args.quiet:
            print(f"model {info.name} ({embedder.model_selection}) at {embedder.url} over {embedder.protocol}: "
                  f"{info.features_name}, {info.feature_dim} wide", file=err)
        for result in embedder.embed_iter(sources, batch_size=args.batch_size, concurrency=args.concurrency):
            if result.features is None:
                failed += 1
                print(f"error: {result.input}: {result.error}", file=err)
            else:
                names.append(result.input)
                rows.append(result.features)
    width = info.feature_dim or (len(rows[0]) if rows else 0)
    features = np.stack(rows) if rows else np.zeros((0, width), dtype=np.float32)
    save_embeddings(args.out, names, features)
    if not args.quiet:
        elapsed = time.perf_counter() - started
        print(f"embedded {len(names)} of {len(sources)} inputs ({failed} failed) in {elapsed:.1f} s: "
              f"{args.out} ({features.shape[0]} x {features.shape[1]} float32), names in {names_path(args.out)}",
              file=err)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None, *, err: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (see the ``--help`` epilog)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    err = err or sys.stderr
    if args.out.suffix != ".npy":
        parser.error(f"--out {args.out}: the features file must end in .npy")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=err)
    Image.MAX_IMAGE_PIXELS = args.max_pixels  # the client's own per-input limit answers first
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    sources = list(expand_inputs(args.inputs))
    try:
        return _run(args, sources, err)
    except ClientError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_SERVER
    except ValueError as exc:  # an input name save_embeddings cannot write
        print(f"error: {exc}", file=err)
        return EXIT_INPUT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
