"""``formats``: the served formats and the image pipeline side by side, in one run on one server.

Measured on the same photos, at the same batch size and concurrency, against one local Triton:

* first, before the server starts, FP32 and INT8 ONNX in process (ONNX Runtime on the same
  batches, nothing else running): the host's own INT8 / FP32 ceiling, to read the served ratio against;
* perf_analyzer throughput and latency of every served classifier (FP32 ONNX, INT8 ONNX,
  TorchScript) fed preprocessed tensors in requests of ``--batch-size`` images, and of the image
  pipelines fed the real encoded files (``--input-data`` with the JPEG/PNG bytes, one per request:
  files differ in size, and a batch needs one shape);
* the project's client end to end over a folder of the photos: client-side preprocessing + tensor
  endpoint, against ``--pipeline`` (files to the image pipeline);
* bytes per image on the wire for each;
* the agreement of every served format with FP32 ONNX on the photos: top-1 agreement, top-5
  overlap, max |logit difference|, SQNR.

The ratios (INT8 / FP32 served and in process, pipeline / tensor) are what to compare across machines.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resnext_triton.bench import cli
from resnext_triton.bench.perf import PerfRun, find_perf_analyzer, run_perf, write_input_data
from resnext_triton.bench.perf_csv import PerfPoint
from resnext_triton.bench.served import point_line, preprocess_photos
from resnext_triton.bench.serving import Endpoints, local_triton, model_ready
from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.ensemble import IMAGE_INPUT, ensemble_name

SCRIPT = "bench/formats.py"
FORMATS = (Format.ONNX, Format.ONNX_INT8, Format.TORCHSCRIPT)


def build_parser() -> argparse.ArgumentParser:
    """The ``formats`` argument parser."""
    parser = cli.new_parser(SCRIPT, "Served formats (FP32/INT8/TorchScript) and the image pipeline side by side.")
    parser.add_argument("--repo", type=Path, required=True,
                        help="an exported repository with onnx and onnx_int8 (and torchscript), e.g. from "
                        "export/export.py --weights random --recalibrate-bn --formats torchscript,onnx,onnx_int8")
    parser.add_argument("-i", "--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("-c", "--concurrency", type=int, default=4,
                        help="requests in flight (perf_analyzer and the client)")
    parser.add_argument("-b", "--batch-size", type=cli.positive_int, default=1,
                        help="images per request to the classifiers (perf_analyzer) and per in-process call; "
                        "the image pipelines take one file per request")
    parser.add_argument("--in-process-images", type=int, default=48,
                        help="images each in-process INT8/FP32 timing runs (0: skip)")
    parser.add_argument("--client-images", type=int, default=48, help="images the client classifies per mode")
    parser.add_argument("--formats", type=cli.name_list([f.value for f in FORMATS]), default=["onnx", "onnx_int8"],
                        help="formats (and their image pipelines) perf_analyzer measures; the agreement table "
                        "covers every served format")
    cli.add_measure_arguments(parser)
    cli.add_output_arguments(parser)
    return parser


def write_file_input_data(files: Sequence[Path], path: Path) -> Path:
    """perf_analyzer ``--input-data`` JSON with the encoded files themselves (UINT8, one entry per file)."""
    entries = [{IMAGE_INPUT: {"content": {"b64": base64.b64encode(f.read_bytes()).decode("ascii")},
                              "shape": [f.stat().st_size]}} for f in files]
    path.write_text(json.dumps({"data": entries}), encoding="utf-8")
    return path


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Top-1 agreement, mean top-5 overlap, max |logit difference| and SQNR (dB) of two logit sets."""
    ref, out = reference.astype(np.float64), candidate.astype(np.float64)
    top5 = np.argsort(-ref, axis=1)[:, :5], np.argsort(-out, axis=1)[:, :5]
    noise = float(np.mean((out - ref) ** 2))
    return {
        "top1_agreement": float(np.mean(top5[0][:, 0] == top5[1][:, 0])),
        "top5_overlap": float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(*top5, strict=True)])),
        "max_abs_diff": float(np.max(np.abs(out - ref))),
        "sqnr_db": math.inf if noise == 0 else 10 * math.log10(float(np.mean(ref**2)) / noise),
    }


def served_logits(endpoints: Endpoints, model: str, batch: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The model's logits for a batch of preprocessed images, through the server (gRPC)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(endpoints.urls["grpc"])
    try:
        inp = grpcclient.InferInput(spec.input_name, list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        return np.asarray(client.infer(model, [inp]).as_numpy(spec.output_name), dtype=np.float32)
    finally:
        client.close()


def client_throughput(endpoints: Endpoints, protocol: str, model: str, folder: Path, *, pipeline: bool,
                      concurrency: int) -> dict[str, Any]:
    """The project's client over a folder: images/s end to end, and whether every image succeeded."""
    from resnext_triton.client import TritonClassifier

    files = sorted(folder.iterdir())
    with TritonClassifier(endpoints.urls[protocol], protocol, model, pipeline=pipeline) as clf:
        clf.wait_until_ready()
        start = time.perf_counter()
        results = list(clf.classify_iter(files, concurrency=concurrency))
        seconds = time.perf_counter() - start
    failed = [r.input for r in results if not r.ok]
    return {"model": clf.model_info.name, "images": len(files), "seconds": seconds,
            "img_per_s": len(files) / seconds, "failed": failed}


def in_process(repo: Path, spec: ModelSpec, tensors: np.ndarray, *, batch: int, images: int) -> dict[str, Any]:
    """FP32 and INT8 ONNX timed in process on the same batches (ONNX Runtime, all cores), one after the other."""
    from resnext_triton.bench.baseline_suite import model_file
    from resnext_triton.bench.baselines import model_only
    from resnext_triton.runners import OnnxRuntimeRunner

    timings: dict[str, Any] = {}
    for fmt in (Format.ONNX, Format.ONNX_INT8):
        path = model_file(repo, spec, fmt)
        if path is None:
            continue
        runner = OnnxRuntimeRunner(path)
        try:
            result = model_only(spec.model_name(fmt), runner.run, tensors, batch=batch, images=images)
        finally:
            runner.close()
        timings[result.name] = result.to_dict()
        print(f"  in process {result.name} b{batch}: {result.throughput:.2f} img/s", flush=True)
    return timings


def _perf(endpoints: Endpoints, args: argparse.Namespace, model: str, data: Path, raw: Path, batch: int) -> PerfPoint:
    run = PerfRun(model, args.protocol, endpoints.urls[args.protocol], batch, args.concurrency)
    point = run_perf(run, cli.measure_settings(args), raw, input_data=data, binary=find_perf_analyzer())
    print("  " + point_line(point), flush=True)
    return point


def measure(args: argparse.Namespace, run_dir: Path, photos: list[Path]) -> dict[str, Any]:
    """Everything this command measures, as one JSON-ready dict."""
    spec = ModelSpec()
    raw = run_dir / "raw"
    tensors = preprocess_photos(photos, spec)
    tensor_data = write_input_data(tensors, spec.input_name, raw / "tensors.json")
    file_data = write_file_input_data(photos, raw / "files.json")
    folder = raw / "images"
    folder.mkdir()
    for i in range(args.client_images):
        src = photos[i % len(photos)]
        shutil.copyfile(src, folder / f"{i:04d}{src.suffix}")
    results: dict[str, Any] = {"batch_size": args.batch_size, "perf": {}, "client": {}, "agreement": {},
                               "in_process": {}}
    if args.in_process_images > 0:
        results["in_process"] = in_process(args.repo, spec, tensors, batch=args.batch_size,
                                           images=args.in_process_images)
    with local_triton(args.repo, None, run_dir=run_dir) as endpoints:
        served = [fmt for fmt in FORMATS if model_ready(endpoints, spec.model_name(fmt))]
        if Format.ONNX not in served:
            raise ValueError(f"{args.repo} serves no {spec.model_name(Format.ONNX)}: export it first")
        reference = served_logits(endpoints, spec.model_name(Format.ONNX), tensors, spec)
        for fmt in served:
            name = spec.model_name(fmt)
            results["agreement"][name] = agreement(reference, served_logits(endpoints, name, tensors, spec))
            if fmt.value not in args.formats:
                continue
            results["perf"][name] = _perf(endpoints, args, name, tensor_data, raw, args.batch_size).to_dict()
            pipe = ensemble_name(spec, fmt)
            if model_ready(endpoints, pipe):
                results["perf"][pipe] = _perf(endpoints, args, pipe, file_data, raw, 1).to_dict()
        onnx = spec.model_name(Format.ONNX)
        for label, pipeline in (("tensor", False), ("pipeline", True)):
            results["client"][label] = client_throughput(
                endpoints, args.protocol, onnx, folder, pipeline=pipeline, concurrency=args.concurrency)
    results["wire_bytes"] = {"tensor": int(np.prod(spec.input_shape)) * 4,
                             "pipeline": int(np.mean([p.stat().st_size for p in photos]))}
    results["ratios"] = ratios(results, spec)
    return results


def ratios(results: dict[str, Any], spec: ModelSpec) -> dict[str, float | None]:
    """The figures to compare across machines."""
    perf = results["perf"]

    def tput(name: str) -> float | None:
        point = perf.get(name) or {}
        return point.get("throughput")

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    onnx, int8 = spec.model_name(Format.ONNX), spec.model_name(Format.ONNX_INT8)
    client = results["client"]
    local = results.get("in_process", {})
    return {
        "int8_over_fp32_served": ratio(tput(int8), tput(onnx)),
        "int8_over_fp32_in_process": ratio((local.get(int8) or {}).get("throughput"),
                                           (local.get(onnx) or {}).get("throughput")),
        "pipeline_over_tensor_served": ratio(tput(ensemble_name(spec, Format.ONNX)), tput(onnx)),
        "client_pipeline_over_client_tensor": ratio(client["pipeline"]["img_per_s"], client["tensor"]["img_per_s"]),
        "wire_bytes_tensor_over_pipeline": results["wire_bytes"]["tensor"] / results["wire_bytes"]["pipeline"],
    }


def summary(results: dict[str, Any], command: str) -> str:
    """The markdown summary (what BENCHMARKS.md quotes)."""
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    batch = results.get("batch_size", 1)
    lines = [f"`{command}`", "", "| model | input | batch | img/s | p50 ms | p95 ms |", "|---|---|---:|---:|---:|---:|"]
    for name, p in results.get("in_process", {}).items():
        lines.append(f"| {name} in process | FP32 tensors | {p['batch']} | {p['throughput']:.2f} | "
                     f"{ms(p['p50_ms'])} | {ms(p['p95_ms'])} |")
    for name, p in results["perf"].items():
        pipeline = name.endswith("_image")
        kind, size = ("encoded files", 1) if pipeline else ("FP32 tensors", batch)
        if p.get("throughput") is None:
            lines.append(f"| {name} | {kind} | {size} | failed: {p.get('error')} | | |")
            continue
        unstable = "" if p.get("stable", True) else " (unstable)"
        lines.append(f"| {name} | {kind} | {size} | {p['throughput']:.2f}{unstable} | {ms(p.get('p50_ms'))} | "
                     f"{ms(p.get('p95_ms'))} |")
    lines += ["", "| client end to end | img/s | failed |", "|---|---:|---:|"]
    for label, c in results["client"].items():
        lines.append(f"| {label} ({c['model']}) | {c['img_per_s']:.2f} | {len(c['failed'])} |")
    wire = results["wire_bytes"]
    lines += ["", f"Bytes per image on the wire: tensor {wire['tensor']:,}, encoded file {wire['pipeline']:,} (mean).",
              "", "| format vs FP32 ONNX | top-1 agreement | top-5 overlap | max abs logit diff | SQNR dB |",
              "|---|---:|---:|---:|---:|"]
    for name, a in results["agreement"].items():
        lines.append(f"| {name} | {a['top1_agreement']:.0%} | {a['top5_overlap']:.0%} | "
                     f"{a['max_abs_diff']:.2e} | {a['sqnr_db']:.1f} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" if v is not None else f"| {k} | n/a |" for k, v in results["ratios"].items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    cli.start_command(args.verbose)
    return cli.run_measurement(args, argv, SCRIPT, "formats-", measure, summary)
