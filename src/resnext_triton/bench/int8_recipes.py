"""``int8_recipes``: INT8 quantization choices side by side, in process, on one host in one run.

For each recipe (an INT8 target, ``cpu`` or ``tensorrt``, and a calibration method), the
repository's FP32 ONNX model is quantized by the exporter's own quantizer
(:func:`resnext_triton.exporters.onnx2int8.quantize_onnx`) on the calibration images, then run by
ONNX Runtime on this CPU next to the FP32 model on the same batches:

* throughput at each batch size, and its ratio to FP32 measured in the same run;
* the SQNR of the logits against FP32 and the top-1 agreement, on the photos (held out of the
  calibration when ``--calibration-images`` is given; otherwise in sample, and the summary says so).

It answers which calibration method keeps the most signal on your images, and what each target's
graph costs on a CPU (the ``tensorrt`` graph, symmetric S8 activations, is TensorRT's input; on a
CPU it shows why ``onnx_int8`` keeps U8 activations). Nothing is published into the repository.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnext_triton.bench import cli
from resnext_triton.bench.baseline_suite import model_file
from resnext_triton.bench.baselines import model_only
from resnext_triton.bench.served import preprocess_photos
from resnext_triton.exporters.onnx2int8 import CALIBRATION_METHODS, TARGETS, quantize_onnx
from resnext_triton.exporters.validate import sqnr_db
from resnext_triton.runners import OnnxRuntimeRunner
from resnext_triton.spec import Format, ModelSpec

SCRIPT = "bench/int8_recipes.py"
DEFAULT_RECIPES = "cpu:minmax,cpu:entropy,cpu:percentile,tensorrt:minmax"


@dataclass(frozen=True)
class Recipe:
    """An INT8 target and a calibration method, written ``target:method``."""

    target: str
    method: str

    @property
    def name(self) -> str:
        """``cpu:minmax``."""
        return f"{self.target}:{self.method}"

    @classmethod
    def parse_list(cls, text: str) -> list[Recipe]:
        """Parse ``cpu:minmax,tensorrt:minmax``.

        Raises:
            argparse.ArgumentTypeError: on an unknown target or method.
        """
        recipes = []
        for item in (part.strip() for part in text.split(",") if part.strip()):
            target, _, method = item.partition(":")
            if target not in TARGETS or method not in CALIBRATION_METHODS:
                raise argparse.ArgumentTypeError(
                    f"bad recipe {item!r}: TARGET:METHOD with TARGET in {', '.join(TARGETS)} and METHOD in "
                    f"{', '.join(CALIBRATION_METHODS)}")
            recipes.append(cls(target, method))
        if not recipes:
            raise argparse.ArgumentTypeError("no recipe given")
        return recipes


def build_parser() -> argparse.ArgumentParser:
    """The ``int8_recipes`` argument parser."""
    parser = cli.new_parser(SCRIPT, "INT8 targets and calibration methods side by side, in process against FP32.")
    parser.add_argument("--repo", type=Path, required=True,
                        help="a repository with an exported FP32 onnx model (export/export.py --formats onnx)")
    parser.add_argument("--recipes", type=Recipe.parse_list, default=Recipe.parse_list(DEFAULT_RECIPES),
                        help=f"comma-separated TARGET:METHOD (default {DEFAULT_RECIPES})")
    parser.add_argument("-b", "--batches", type=cli.int_list, default=[1, 8], help="batch sizes to time")
    parser.add_argument("--images", type=int, default=96, help="images timed per batch size and model")
    parser.add_argument("--calibration-images", type=Path, metavar="DIR",
                        help="calibrate on the images in DIR (default: the photos)")
    cli.add_output_arguments(parser)
    return parser


def _time(name: str, path: Path, photos: np.ndarray, batches: Sequence[int], images: int) -> dict[str, Any]:
    """Throughput per batch size, and the logits on the photos."""
    runner = OnnxRuntimeRunner(path)
    try:
        logits = runner.run(photos).logits
        speed = {b: model_only(name, runner.run, photos, batch=b, images=images).throughput for b in batches}
    finally:
        runner.close()
    print(f"  {name}: " + ", ".join(f"b{b} {v:.2f} img/s" for b, v in speed.items()), flush=True)
    return {"img_per_s": speed, "logits": logits}


def measure(args: argparse.Namespace, run_dir: Path, photos: list[Path]) -> dict[str, Any]:
    """FP32, then every recipe: quantized, timed and compared on the photos."""
    spec = ModelSpec()
    fp32 = model_file(args.repo, spec, Format.ONNX)
    if fp32 is None:
        raise ValueError(f"{args.repo} has no exported {spec.model_name(Format.ONNX)}: export --formats onnx first")
    tensors = preprocess_photos(photos, spec)
    calibration = tensors
    if args.calibration_images is not None:
        from resnext_triton.exporters.cli import calibration_image_files

        calibration = preprocess_photos(list(calibration_image_files(args.calibration_images)), spec)
    reference = _time("fp32", fp32, tensors, args.batches, args.images)
    rows: dict[str, Any] = {"fp32": {"img_per_s": reference["img_per_s"]}}
    with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
        for recipe in args.recipes:
            out = Path(tmp) / f"{recipe.target}_{recipe.method}.onnx"
            quantize_onnx(fp32, out, spec, calibration, method=recipe.method, target=recipe.target)
            got = _time(recipe.name, out, tensors, args.batches, args.images)
            ref, logits = reference["logits"], got["logits"]
            rows[recipe.name] = {
                "img_per_s": got["img_per_s"],
                "over_fp32": {b: got["img_per_s"][b] / reference["img_per_s"][b] for b in args.batches},
                "sqnr_db": sqnr_db(ref, logits),
                "top1_agreement": float(np.mean(ref.argmax(1) == logits.argmax(1))),
            }
    return {"photos": len(tensors), "calibration_images": len(calibration),
            "in_sample": args.calibration_images is None, "batches": args.batches, "rows": rows}


def summary(results: dict[str, Any], command: str) -> str:
    """The markdown table (what BENCHMARKS.md quotes)."""
    batches = results["batches"]
    head = " | ".join(f"b{b} img/s | b{b} / FP32" for b in batches)
    lines = [f"`{command}`", "", f"| recipe | {head} | SQNR dB | top-1 agreement |",
             "|---|" + "---:|" * (2 * len(batches) + 2)]
    for name, row in results["rows"].items():
        cells = []
        for b in batches:
            ratio = row.get("over_fp32", {}).get(b, 1.0)
            cells.append(f"{row['img_per_s'][b]:.2f} | {ratio:.2f}")
        quality = (f"{row['sqnr_db']:.1f} | {row['top1_agreement']:.0%}" if "sqnr_db" in row
                   else "reference | reference")
        lines.append(f"| {name} | {' | '.join(cells)} | {quality} |")
    where = ("the calibration images themselves (in sample: favours minmax, which clips none of them; "
             "pass --calibration-images DIR to score held-out photos)" if results["in_sample"]
             else "photos held out of the calibration")
    lines += ["", f"{results['photos']} photos compared, {where}; {results['calibration_images']} calibration images."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    cli.start_command(args.verbose)
    if args.images < 1:
        return cli.error("--images must be at least 1")
    return cli.run_measurement(args, argv, SCRIPT, "int8-", measure, summary)
