"""``evaluate``: top-1/top-5 accuracy of a served model on a labelled image set, or agreement between models.

Usage::

    python client/evaluate.py DIR [-m MODEL | --compare MODEL,MODEL,...] [--label-file FILE]
        [-u URL] [-i grpc|http] [-b BATCH] [--concurrency N] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from PIL import Image

from resnext_triton.client import cli as classify_cli
from resnext_triton.client.classifier import TritonClassifier
from resnext_triton.client.cli import EXIT_INPUT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SERVER, EXIT_USAGE
from resnext_triton.client.dataset import Dataset, DatasetError, load_dataset
from resnext_triton.client.errors import ClientError
from resnext_triton.client.evaluation import ModelEvaluation, evaluate_models
from resnext_triton.client.metrics import CONFIDENCE
from resnext_triton.client.options import positive_int
from resnext_triton.spec import ModelSpec

EPILOG = f"""\
image sets:
  DIR/n01440764/*.JPEG ...    an ImageFolder tree: each folder is a class, named by its WordNet id
                              (the first word of the model's label lines), or DIR/0/, DIR/17/ by class index
  --label-file FILE           'filename class' lines (ImageNet's validation list: ILSVRC2012_val_00000001.JPEG 65),
                              filenames relative to DIR, class an index or a WordNet id
  a folder of images only     unlabelled: agreement between models only (--compare); --unlabelled forces it
  Images are read and preprocessed exactly as classify.py does; a bad file is counted and named in the
  report, and left out of the accuracy, while every other image is scored.

output:
  Top-1 and top-5 accuracy with a {CONFIDENCE:.0%} Wilson score interval, and the classes with the lowest
  top-1 accuracy. With --compare A,B,...: one row per model with its accuracy, its top-1 agreement with A,
  the mean share of A's top-5 classes in its top-5, and its largest |logit difference| from A (every
  class's logit is fetched). --json prints one JSON object per model and line with every figure.

exit status:
  {EXIT_OK}  every image was classified
  {EXIT_INPUT_FAILED}  some images failed (each is named; the others were scored)
  {EXIT_USAGE}  usage error: bad option, unknown class folder, malformed label file, no images
  {EXIT_SERVER}  server unreachable within --timeout or lost, model missing/not ready/unusable
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""

SHARED_OPTIONS = {
    "server": ("url", "protocol", "model", "pipeline", "timeout", "request_timeout"),
    "throughput": ("batch_size", "concurrency", "workers"),
    "image set": ("max_pixels",),
    "output": ("no_progress", "quiet", "verbose"),
}
"""classify.py's options that evaluate.py takes as they are, by argparse group."""


def _model_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"needs two or more different model names, comma separated; got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The ``evaluate`` argument parser; server, throughput and input options are classify's own."""
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Accuracy of NVIDIA's ResNeXt101-32x4d served by Triton on a labelled image set, "
        "or agreement between served models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", metavar="DIR", help="the image set (see 'image sets' below)")
    classify = {action.dest: action for action in classify_cli.build_parser()._actions}
    groups = {}
    for title, dests in SHARED_OPTIONS.items():
        groups[title] = parser.add_argument_group(title)
        for dest in dests:  # the same Action objects, as argparse's parents= shares them
            groups[title]._add_action(classify[dest])
    groups["server"].add_argument(
        "--compare",
        type=_model_list,
        default=None,
        metavar="MODEL,MODEL,...",
        help="run several models on the same images and compare each with the first (not with -m)",
    )
    data = groups["image set"]
    data.add_argument("--label-file", type=Path, default=None, metavar="FILE", help="'filename class' lines")
    data.add_argument("--unlabelled", action="store_true", help="ignore class folders: agreement only (--compare)")
    data.add_argument(
        "--labels", type=Path, default=None, metavar="FILE", help="the model's label list (default: ImageNet's 1000)"
    )
    groups["output"].add_argument("--json", action="store_true", help="one JSON object per model and line")
    groups["output"].add_argument(
        "--worst", type=positive_int, default=10, metavar="N", help="worst classes shown (default: 10)"
    )
    return parser


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def format_report(evaluation: ModelEvaluation, *, worst: int = 10) -> str:
    """The text report of one model: counts, failures, top-1/top-5 with their interval, worst classes."""
    lines = _header([evaluation])
    acc = evaluation.accuracy
    if acc is None:
        return "\n".join(lines)
    lines += ["", f"       {'accuracy':>8}  correct / images  {CONFIDENCE:.0%} CI (Wilson)"]
    for name, tally in (("top-1", acc.top1), ("top-5", acc.top5)):
        ci = tally.interval()
        span = f"{_percent(ci[0])} - {_percent(ci[1])}" if ci else "-"
        lines.append(f"{name}  {_percent(tally.accuracy):>8}  {tally.correct:>7} / {tally.total:<6}  {span}")
    classes = acc.worst(worst, evaluation.labels)
    if classes:
        lines += ["", f"worst {len(classes)} of {len(acc.per_class)} classes by top-1 accuracy:"]
        lines.append(f"  {'class':>5}  {'top-1':>8}  correct / images  label")
        for c in classes:
            lines.append(f"  {c.class_id:>5}  {_percent(c.accuracy):>8}  {c.correct:>7} / {c.total:<6}  {c.label}")
    return "\n".join(lines)


def format_comparison(evaluations: Sequence[ModelEvaluation]) -> str:
    """The text report of ``--compare``: counts, failures, then one row per model against the first.

    The accuracy columns are shown for a labelled set only.
    """
    lines = [*_header(evaluations), ""]
    width = max(len("model"), *(len(e.model) for e in evaluations))
    labelled = any(e.accuracy is not None for e in evaluations)
    head = f"{'model':<{width}}" + (f"  {'top-1':>8}  {'top-5':>8}" if labelled else "")
    lines.append(f"{head}  top-1 agreement  top-5 overlap  max|logit diff|")
    for e in evaluations:
        row = f"{e.model:<{width}}"
        if labelled:
            top1, top5 = (e.accuracy.top1.accuracy, e.accuracy.top5.accuracy) if e.accuracy else (None, None)
            row += f"  {_percent(top1):>8}  {_percent(top5):>8}"
        agree = e.agreement
        if agree is None:
            row += f"  {'(reference)':>15}"
        else:
            diff = "-" if agree.top1.total == 0 else f"{agree.max_abs_logit_diff:.1e}"
            row += f"  {_percent(agree.top1.accuracy):>15}  {_percent(agree.top5_overlap):>13}  {diff:>15}"
        lines.append(row)
    return "\n".join(lines)


def _header(evaluations: Sequence[ModelEvaluation]) -> list[str]:
    """Who was evaluated on what, how many images each model classified, and every failure."""
    first = evaluations[0]
    models = ", ".join(e.model for e in evaluations)
    total = len(first.dataset)
    lines = [f"{models} on {first.dataset.describe()}"]
    if len(evaluations) == 1:
        speed = f" ({first.classified / first.elapsed_s:.1f} img/s)" if first.elapsed_s > 0 else ""
        lines.append(f"classified {first.classified:,} of {total:,} images in {first.elapsed_s:.1f} s{speed}")
    else:
        if len({e.classified for e in evaluations}) == 1:
            done = f"each model classified {first.classified:,}"
        else:
            done = "classified " + ", ".join(f"{e.classified:,} ({e.model})" for e in evaluations)
        lines.append(f"{done} of {total:,} images in {first.elapsed_s:.1f} s")
    failures: dict[str, list[tuple[str, str]]] = {}
    for e in evaluations:
        for name, error in e.failed:
            failures.setdefault(name, []).append((e.model, error))
    if failures:
        lines.append(f"failed {len(failures):,} (left out of the figures):")
        for name, errors in failures.items():
            if len(errors) == len(evaluations) and len({error for _, error in errors}) == 1:
                lines.append(f"  {name}: {errors[0][1]}")
            else:
                lines += [f"  {name} [{model}]: {error}" for model, error in errors]
    return lines


def _run(args: argparse.Namespace, dataset: Dataset, labels: list[str], out: TextIO, err: TextIO) -> int:
    from tqdm import tqdm

    models = args.compare or [args.model]
    with contextlib.ExitStack() as stack:
        classifiers = []
        for model in models:
            clf = TritonClassifier(
                args.url,
                args.protocol,
                model,
                timeout_s=args.timeout,
                request_timeout_s=args.request_timeout,
                labels=labels,
                max_pixels=args.max_pixels,
                workers=args.workers,
                pipeline=args.pipeline,
            )
            classifiers.append(stack.enter_context(clf))
            info = clf.wait_until_ready()
            if not args.quiet:
                print(classify_cli.describe_model(info, clf), file=err)
        show_bar = len(dataset) > classifiers[0].resolve_batch_size(args.batch_size) and not args.no_progress
        with tqdm(total=len(dataset), unit="img", file=err, disable=None if show_bar else True) as bar:
            evaluations = evaluate_models(
                dataset, classifiers, batch_size=args.batch_size, concurrency=args.concurrency, progress=bar.update
            )
    if args.json:
        for evaluation in evaluations:
            print(json.dumps(evaluation.to_dict(worst=args.worst), ensure_ascii=False), file=out)
    elif len(evaluations) > 1:
        print(format_comparison(evaluations), file=out)
    else:
        print(format_report(evaluations[0], worst=args.worst), file=out)
    return EXIT_INPUT_FAILED if any(e.failed for e in evaluations) else EXIT_OK


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (see the ``--help`` epilog)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = out or sys.stdout
    err = err or sys.stderr
    if args.compare and args.model:
        parser.error("give the models either with -m MODEL or with --compare MODEL,MODEL,..., not both")
    if args.label_file and args.unlabelled:
        parser.error("--label-file and --unlabelled exclude each other")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=err,
    )
    Image.MAX_IMAGE_PIXELS = args.max_pixels  # as classify.py: the client's own limit refuses first
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    try:
        labels = _labels(args.labels)
        dataset = load_dataset(args.root, labels, label_file=args.label_file, unlabelled=args.unlabelled)
        if not dataset.labelled and not args.compare:
            raise DatasetError(
                f"{dataset.root} has no class folders and no --label-file gives its classes: nothing to score "
                "(--compare MODEL,MODEL,... measures agreement without labels)"
            )
        return _run(args, dataset, labels, out, err)
    except DatasetError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except ClientError as exc:  # ServerUnavailable, ModelNotReady, or a request the model cannot take
        print(f"error: {exc}", file=err)
        return EXIT_SERVER
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED


def _labels(path: Path | None) -> list[str]:
    """The label list: ImageNet's, or one label per non-empty line of ``path``.

    Raises:
        DatasetError: if the file cannot be read or is empty.
    """
    if path is None:
        return ModelSpec().labels()
    try:
        labels = [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the label list {path}: {exc}") from exc
    if not labels:
        raise DatasetError(f"the label list {path} is empty")
    return labels


if __name__ == "__main__":
    sys.exit(main())
