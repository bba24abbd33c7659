"""``python bench/gpu/run.py``: export, serve and measure on a GPU machine in one command (< 10 minutes).

Steps: unpack the carry (or use this environment's Triton and perf_analyzer), check their shared
libraries, export with the project's exporter (:mod:`.gpu_export`), start the carried Triton with
the GPU configs and the ``pytorch`` stand-in on CUDA (:mod:`.gpu_server`), check the served
logits against the file run here, sweep perf_analyzer over system shared memory within the time
budget (:mod:`.gpu_sweep`), time the same file in-process (:mod:`.gpu_inprocess`), and write the
results directory (:mod:`.gpu_report`). ``--device cpu`` runs every step on a CPU host, with tiny
defaults: the CI check that the harness works.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resnext_triton.bench import cli
from resnext_triton.bench.gpu_export import ExportOptions, artifact, export_steps, exporter_env, run_export
from resnext_triton.bench.gpu_report import LOG_FILE, write_report
from resnext_triton.bench.gpu_sweep import Deadline, Grid, largest_output, sweep, write_input_data
from resnext_triton.spec import Format, ModelSpec

EXIT_FAILED = 1
DEFAULTS = {  # (GPU, CPU)
    "batches": ([1, 8, 64], [1, 2]), "concurrency": ([1, 4, 16, 64, 256], [1, 2]), "instances": (2, 1),
    "window_images": (1024, 4), "stability_percentage": (10.0, 50.0), "baseline_images": (1024, 4),
}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``bench/gpu/run.py``."""
    parser = cli.new_parser("bench/gpu/run.py", "Export, serve and measure ResNeXt on a GPU machine in one command: "
                            "the FP16 TorchScript model behind the carried Triton, perf_analyzer over system shared "
                            "memory, and the same file in-process.")
    where = parser.add_argument_group("where")
    where.add_argument("--carry", type=Path, help="folder written by bench/gpu/prepare.py (default: the Triton and "
                       "perf_analyzer of this environment)")
    where.add_argument("--out", type=Path, default=cli.ROOT / "bench" / "results" / "gpu", help="results directory")
    where.add_argument("--work", type=Path, help="scratch directory (default: a temporary one, removed afterwards)")
    where.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                       help="cuda: FP16 TorchScript on the GPU; cpu: the CPU mode (FP32, configs/cpu.pbtxt, tiny)")
    model = parser.add_argument_group("model")
    model.add_argument("--weights", default="random", help="export/export.py --weights (random: no download)")
    model.add_argument("--no-onnx", action="store_true", help="export only the TorchScript model")
    model.add_argument("--tensorrt", action="store_true", help="also build, validate and time the TensorRT plan "
                       "(skipped with a message where TensorRT is not installed)")
    model.add_argument("--max-batch-size", type=int, default=64, help="the configs' max batch size")
    model.add_argument("--instances", type=int, help="model instances (default: GPU 2, CPU 1)")
    model.add_argument("--queue-delay-us", type=int, default=100, help="dynamic batcher max queue delay")
    grid = parser.add_argument_group("sweep (default: GPU / CPU)")
    grid.add_argument("-b", "--batches", type=cli.int_list, help="request batch sizes (1,8,64 / 1,2)")
    grid.add_argument("-c", "--concurrency", type=cli.int_list, help="concurrencies (1,4,16,64,256 / 1,2)")
    grid.add_argument("--max-in-flight", type=int, default=1024, help="skip points with batch x concurrency above")
    grid.add_argument("--baseline-images", type=int, help="images per in-process batch size (1024 / 4)")
    grid.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole run, seconds")
    grid.add_argument("--reserve-s", type=float, default=60.0, help="seconds kept for the in-process part")
    cli.add_measure_arguments(parser)
    parser.set_defaults(window_images=None, stability_percentage=None)
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    index = 0 if args.device == "cuda" else 1
    for key, values in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, values[index])
    if max(args.batches) > args.max_batch_size:
        raise ValueError(f"batch sizes {args.batches} exceed --max-batch-size {args.max_batch_size}")
    return args


class Console:
    """Prints each line and appends it to the results directory's ``run.log``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")

    def __call__(self, line: str) -> None:
        """Print ``line`` and append it to the log."""
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _device_name(gpu: bool) -> str:
    if gpu:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"no CUDA device for torch {torch.__version__}: run with --device cpu")
        return str(torch.cuda.get_device_name(0))
    from resnext_triton.bench.machine import cpu_model, usable_cores

    return f"CPU {cpu_model()} ({usable_cores()} cores)"


def _tensorrt(args: argparse.Namespace, echo: cli.Echo) -> bool:
    import importlib.util

    if not args.tensorrt:
        return False
    if args.device != "cuda" or importlib.util.find_spec("tensorrt") is None:
        why = "the CPU mode has no GPU" if args.device != "cuda" else "TensorRT is not installed on this host"
        echo(f"--tensorrt: {why}: the TensorRT plan is skipped")
        return False
    echo("--tensorrt: the plan is built, validated and timed in-process; the carried Triton has only the Python "
         "backend, so it is not served")
    return True


class Run:
    """One harness run: its arguments, scratch directory, console and what it found so far."""

    def __init__(self, args: argparse.Namespace, argv: Sequence[str] | None, work: Path, echo: Console) -> None:
        self.args, self.work, self.echo = args, work, echo
        self.gpu, self.spec = args.device == "cuda", ModelSpec()
        self.deadline = Deadline(args.budget_s)
        mode = "cuda" if self.gpu else "cpu (the CPU mode checks that the harness runs: its figures are no benchmark)"
        self.context: dict[str, Any] = {"command": cli.command_line(argv, "bench/gpu/run.py"), "mode": mode}
        self.exports: list[str] = []
        self.checks: list[str] = []
        self.points: list = []
        self.baselines: list = []
        self.raw: list[Path] = [work / "raw", work / "triton.log"]
        self.python_path: tuple[Path, ...] = ()
        self.ok = True

    def tools(self) -> Any:
        """The carry's tools (or this environment's), their libraries checked; the carried tritonclient importable."""
        from resnext_triton.bench.gpu_tools import carried_tools, check_tools, local_tools, use_carried_python

        tools = carried_tools(self.args.carry, self.work) if self.args.carry else local_tools()
        tools = check_tools(tools, self.work / "lib-fallback")
        added = use_carried_python(tools)
        self.python_path = added  # for the exporter too, only where this Python lacks tritonclient
        self.context["tools"] = tools.origin + (f"; fixed: {', '.join(tools.fixes)}" if tools.fixes else "")
        self.echo(f"tools: {self.context['tools']}" + (f"; tritonclient from {added[0]}" if added else ""))
        return tools

    def export(self, tools: Any, trt: bool) -> Path | None:
        """Run the exporter steps; returns the TorchScript file to serve (None if none was published)."""
        options = ExportOptions(weights=self.args.weights, gpu=self.gpu, onnx=not self.args.no_onnx, tensorrt=trt,
                                max_batch_size=self.args.max_batch_size, instances=self.args.instances,
                                queue_delay_us=self.args.queue_delay_us)
        env = exporter_env(self.python_path)
        for step in export_steps(self.work / "model_repository", options):
            left = self.deadline.remaining() - self.args.reserve_s
            run_export(step, self.work / "raw", env, timeout_s=max(left, 1.0), echo=self.echo)
            self.exports += [f"$ export/export.py {' '.join(step.command[2:])}", *(step.lines or [])]
            self.ok &= step.ok
        return artifact(self.work / "model_repository", self.spec, Format.TORCHSCRIPT)

    def serve_and_sweep(self, tools: Any, model_file: Path, images: np.ndarray) -> None:
        """Start Triton, check its logits against the file, then sweep perf_analyzer within the budget."""
        from resnext_triton.bench.gpu_inprocess import load_torchscript, served_agreement
        from resnext_triton.bench.gpu_server import serve

        model = self.spec.model_name(Format.TORCHSCRIPT)
        device = "cuda" if self.gpu else "cpu"
        dtype = load_torchscript(model_file, device)[1]
        data = write_input_data(images.astype(dtype), self.spec.input_name, self.work / "raw" / "input_data.json")
        config = self.work / "model_repository" / model / ("config.pbtxt" if self.gpu else "configs/cpu.pbtxt")
        started = time.perf_counter()
        with serve(tools, self.work / "model_repository", [model], self.work, gpu=self.gpu) as server:
            self.echo(f"Triton ready in {time.perf_counter() - started:.1f} s: gRPC {server.grpc}, serving {model}")
            self.context["served"] = f"{model} ({'config.pbtxt, KIND_GPU' if self.gpu else 'configs/cpu.pbtxt'})"
            agreement = served_agreement(server.grpc, model, self.spec, model_file, device, images)
            self.checks.append(agreement.line())
            self.echo(agreement.line())
            self.ok &= agreement.ok
            grid = Grid(tuple(self.args.batches), tuple(self.args.concurrency), self.args.max_in_flight)
            settings = cli.measure_settings(self.args)
            self.context["perf_analyzer"] = cli.settings_text(settings) + "; --shared-memory system"
            self.points = sweep(model, server.grpc, grid, settings, tools=tools, raw_dir=self.work / "raw",
                                input_data=data, output_elements=largest_output(config), itemsize=dtype.itemsize,
                                deadline=Deadline(self.deadline.remaining() - self.args.reserve_s), echo=self.echo)

    def inprocess(self, model_file: Path, images: np.ndarray, trt: bool) -> None:
        """Time the served file (and the TensorRT plan, when built) in this process."""
        from resnext_triton.bench.baselines import model_only
        from resnext_triton.bench.gpu_inprocess import inprocess_baselines

        device = "cuda" if self.gpu else "cpu"
        self.baselines = inprocess_baselines(model_file, device, images, self.args.batches,
                                             count=self.args.baseline_images, echo=self.echo)
        plan = artifact(self.work / "model_repository", self.spec, Format.TENSORRT) if trt else None
        if plan is not None:
            from resnext_triton.runners import TensorRTRunner

            runner = TensorRTRunner(plan, self.spec)
            for batch in self.args.batches:
                count = max(self.args.baseline_images, 30 * batch)
                self.baselines.append(model_only("TensorRT FP16 plan in-process (input from host memory)", runner,
                                                 images, batch=batch, images=count))
            runner.close()

    def execute(self) -> None:
        """Every step, in order (an exception ends the run; :func:`main` still writes the report)."""
        self.context["device"] = _device_name(self.gpu)
        self.context["python"] = f"{platform.python_version()} ({sys.executable})"
        self.echo(f"device: {self.context['device']}; budget {self.args.budget_s:g} s")
        tools = self.tools()
        trt = _tensorrt(self.args, self.echo)
        model_file = self.export(tools, trt)
        if model_file is None:
            self.checks.append("no TorchScript model was published: nothing to serve (see the export log)")
            self.ok = False
            return
        from resnext_triton.bench.served import preprocess_photos

        images = preprocess_photos(cli.require_photos(), self.spec)
        self.serve_and_sweep(tools, model_file, images)
        self.inprocess(model_file, images, trt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness; 0 when every step ran and every check held, 1 otherwise, 2 for usage errors."""
    args = build_parser().parse_args(argv)
    cli.start_command(args.verbose)
    try:
        args = _resolve(args)
    except ValueError as exc:
        return cli.error(exc)
    echo = Console(args.out / LOG_FILE)
    work = args.work or Path(tempfile.mkdtemp(prefix="resnext-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    run = Run(args, argv, work, echo)
    started = time.perf_counter()
    try:
        run.execute()
    except Exception as exc:  # a failed step still leaves a report of what ran
        from resnext_triton.bench.gpu_server import ServerStartError

        tail = f"\n{exc.log_tail}" if isinstance(exc, ServerStartError) else ""
        run.checks.append(f"FAILED: {type(exc).__name__}: {exc}")
        run.ok = False
        echo(f"error: {exc}{tail}")
    finally:
        run.context["seconds"] = f"{time.perf_counter() - started:.0f}"
        try:
            files = write_report(args.out, context=run.context, exports=run.exports, checks=run.checks,
                                 points=run.points, baselines=run.baselines, raw=run.raw)
            echo(f"results: {', '.join(str(f) for f in [*files, args.out / LOG_FILE])}")
        except OSError as exc:
            run.ok = False
            echo(f"error: cannot write the results into {args.out}: {exc}")
        if not args.keep_work and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    failed = [p for p in run.points if not p.ok and not (p.error or "").startswith("skipped")]
    return EXIT_FAILED if not run.ok or failed else 0
