"""``python export/export.py``: PyTorch -> TorchScript / ONNX / TensorRT FP16 -> Triton model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from resnext_triton.exporters import ExportError
from resnext_triton.exporters.onnx2int8 import CALIBRATION_METHODS
from resnext_triton.spec import ARCHS, DEFAULT_VARIANT, Format, ModelSpec
from resnext_triton.triton.config import ServingOptions
from resnext_triton.triton.repository import write_configs

if TYPE_CHECKING:
    from resnext_triton.weights import LoadedWeights

log = logging.getLogger(__name__)

EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    """The command line of the exporter."""
    parser = argparse.ArgumentParser(
        prog="export/export.py",
        description="Export ResNeXt to TorchScript, ONNX and TensorRT FP16, validate each against the eager "
        "model, and write them as a Triton model repository.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--weights", default="ngc",
        help="'ngc' downloads NVIDIA's pretrained checkpoint; a PATH loads a .pth/.pth.tar/.pt/.safetensors "
        "checkpoint; 'random' exports an untrained model (offline demos and tests)",
    )
    model.add_argument("--variant", default=DEFAULT_VARIANT, choices=sorted(ARCHS))
    model.add_argument("--num-classes", type=int, default=1000, help="classes of a fine-tuned model (needs --labels)")
    model.add_argument("--labels", type=Path, help="label file, one class per line (default: the ImageNet classes)")

    out = parser.add_argument_group("output")
    out.add_argument("--formats", default="torchscript,onnx",
                     help="comma-separated: torchscript,onnx,onnx_int8,tensorrt,tensorrt_int8 "
                     "(the TensorRT plans need TensorRT and a GPU)")
    out.add_argument("--out", type=Path, default=Path("model_repository"), help="model repository directory")
    out.add_argument("--keep", type=int, default=2, help="versions to keep per model (0 keeps all)")
    out.add_argument("--configs-only", action="store_true",
                     help="only (re)write config.pbtxt, configs/cpu.pbtxt and labels.txt; export nothing")

    fmt = parser.add_argument_group("format options")
    fmt.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device to trace and validate on")
    fmt.add_argument("--torchscript-fp16", action="store_true", help="FP16 TorchScript (GPU targets; FP16 I/O)")
    fmt.add_argument("--channels-last", action="store_true", help="trace TorchScript in channels_last (GPU targets)")
    fmt.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or newer)")
    fmt.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file (read and updated)")
    fmt.add_argument("--calibration-images", type=Path, metavar="DIR",
                     help="onnx_int8, tensorrt_int8: calibrate on the images in DIR (default: the validation photos)")
    fmt.add_argument("--calibration-method", default="minmax", choices=CALIBRATION_METHODS,
                     help="onnx_int8, tensorrt_int8: activation calibration (default: minmax)")

    serve = parser.add_argument_group("Triton config")
    serve.add_argument("--max-batch-size", type=int, default=64)
    serve.add_argument("--queue-delay-us", type=int, default=100, help="dynamic batcher max queue delay")
    serve.add_argument("--gpu-instances", type=int, default=2, help="instances per GPU model")
    serve.add_argument("--cpu-instances", type=int, default=1, help="instances per model in configs/cpu.pbtxt")
    serve.add_argument("--preferred-batch-sizes", default="", help="comma-separated preferred batch sizes")
    serve.add_argument("--ort-tensorrt-fp16", action="store_true",
                       help="run the ONNX model through ONNX Runtime's TensorRT accelerator (FP16) on GPU hosts")
    serve.add_argument("--no-cuda-graphs", action="store_true", help="no CUDA graphs for the TensorRT model")
    serve.add_argument("--no-warmup", action="store_true", help="no model_warmup in the configs")

    check = parser.add_argument_group("validation")
    check.add_argument("--skip-validation", action="store_true", help="publish without checking against eager")
    check.add_argument("--images", type=Path, nargs="+",
                       help="validation photos (default: the photos matplotlib and scikit-image ship)")
    check.add_argument("--recalibrate-bn", action="store_true",
                       help="re-estimate BatchNorm statistics on the validation photos first (for --weights random: "
                       "outputs that depend on the input; recorded in the manifest)")
    check.add_argument("--fp16-max-rel", type=float, metavar="R",
                       help="override the FP16 bound on max |diff| / max |logit| (default 0.05)")
    check.add_argument("--fp16-beyond-noise", action="store_true",
                       help="FP16: hold top-1 only on photos whose FP32 margin exceeds the measured noise (as INT8; "
                       "for random weights, whose near-ties FP16 rounding may flip)")
    check.add_argument("--int8-min-sqnr", type=float, metavar="DB",
                       help="override the INT8 bound on the logits' SQNR against FP32 (default 20 dB)")
    check.add_argument("--atol", type=float, help="override the FP32 max |logit difference| bound (default 1e-3)")

    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _options(args: argparse.Namespace) -> ServingOptions:
    preferred = tuple(int(x) for x in args.preferred_batch_sizes.split(",") if x.strip())
    return ServingOptions(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.queue_delay_us,
        gpu_instances=args.gpu_instances,
        cpu_instances=args.cpu_instances,
        preferred_batch_sizes=preferred,
        ort_tensorrt_fp16=args.ort_tensorrt_fp16,
        cuda_graphs=not args.no_cuda_graphs,
        warmup=not args.no_warmup,
        fp16_input=args.torchscript_fp16,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the exporter; returns the exit status (0 only when every format succeeded)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("resnext_triton").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        formats = tuple(Format.parse_list(args.formats))
        spec = ModelSpec(variant=args.variant, num_classes=args.num_classes, labels_path=args.labels)
        spec.labels()  # fail early on a label file that does not fit
        options = _options(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.configs_only:
        for fmt in formats:
            print(f"wrote {write_configs(args.out, spec, fmt, options)}")
        return 0
    return _export(args, spec, formats, options)


def _export(args: argparse.Namespace, spec: ModelSpec, formats: tuple[Format, ...], options: ServingOptions) -> int:
    from resnext_triton.exporters.pipeline import Exporter, ExportRequest
    from resnext_triton.exporters.validate import TOLERANCES
    from resnext_triton.samples import sample_photos
    from resnext_triton.weights import WeightsError, load_weights

    tolerances = dict(TOLERANCES)
    if args.atol is not None:
        tolerances["fp32"] = replace(tolerances["fp32"], max_abs=args.atol)
    if args.fp16_max_rel is not None:
        tolerances["fp16"] = replace(tolerances["fp16"], max_rel=args.fp16_max_rel)
    if args.fp16_beyond_noise:
        tolerances["fp16"] = replace(tolerances["fp16"], top1=False, beyond_noise=True)
    if args.int8_min_sqnr is not None:
        tolerances["int8"] = replace(tolerances["int8"], min_sqnr_db=args.int8_min_sqnr)
    photos = tuple(args.images) if args.images else tuple(sample_photos())
    if not args.skip_validation and not photos:
        log.warning("no sample photos found (install matplotlib or scikit-image, or pass --images); "
                    "validating on random inputs only")
    try:
        request = ExportRequest(
            spec=spec, formats=formats, out=args.out, options=options, keep=args.keep,
            validate=not args.skip_validation, device=args.device, torchscript_fp16=args.torchscript_fp16,
            channels_last=args.channels_last, opset=args.opset, photos=photos, tolerances=tolerances,
            timing_cache=args.timing_cache, calibration_images=calibration_image_files(args.calibration_images),
            calibration_method=args.calibration_method,
        )
        weights = load_weights(spec, args.weights, progress=not args.no_progress)
        if args.recalibrate_bn:
            weights = _recalibrated(weights, photos, spec)
        results = Exporter(request, weights).run()
    except (WeightsError, ExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"\nweights: {weights.source}" + (f" {weights.path} sha256 {weights.sha256}" if weights.path else ""))
    if weights.is_random:
        print("WARNING: RANDOM (untrained) weights -- predictions and labels are meaningless")
    if args.skip_validation:
        print("WARNING: validation skipped (--skip-validation)")
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} formats exported to {args.out}"
          + (f"; FAILED: {', '.join(r.fmt.value for r in failed)}" if failed else ""))
    return EXIT_FAILED if failed else 0


def _recalibrated(weights: LoadedWeights, photos: tuple[Path, ...], spec: ModelSpec) -> LoadedWeights:
    """The weights with BatchNorm statistics re-estimated on ``photos`` (see ``recalibrate_batchnorm``).

    Raises:
        ExportError: without photos.
    """
    import torch

    from resnext_triton.exporters.pipeline import load_photos
    from resnext_triton.model import recalibrate_batchnorm

    if not photos:
        raise ExportError("--recalibrate-bn needs photos (install matplotlib or scikit-image, or pass --images)")
    recalibrate_batchnorm(weights.model, torch.from_numpy(load_photos(photos, spec)))
    log.info("BatchNorm statistics re-estimated on %d photos", len(photos))
    return replace(weights, batchnorm_images=len(photos))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def calibration_image_files(folder: Path | None) -> tuple[Path, ...]:
    """The image files under ``folder`` (recursively, sorted); () for the default.

    Raises:
        ExportError: if the folder does not exist or holds no image.
    """
    if folder is None:
        return ()
    if not folder.is_dir():
        raise ExportError(f"--calibration-images {folder}: not a directory")
    found = tuple(sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
    if not found:
        raise ExportError(f"--calibration-images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found


if __name__ == "__main__":
    sys.exit(main())
