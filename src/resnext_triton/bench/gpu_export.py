"""The GPU harness's export step: the project's own exporter (``export/export.py``), run as a command.

Two invocations into one scratch repository, each validating what it publishes against the FP32
eager model on the sample photos (the exporter exits 1 when an artifact fails):

1. ONNX (and, with ``--tensorrt``, the TensorRT plan built from it) traced on the CPU: the GPU
   machine's ONNX Runtime is a CPU build, so the ONNX model is validated there; the plan is
   validated on the GPU;
2. TorchScript: on a GPU ``--device cuda --torchscript-fp16 --channels-last`` (FP16 I/O, traced
   and validated on CUDA), which is the model served; in CPU mode the FP32 TorchScript.

TorchScript goes last so that the shared preprocessing config and the configs of the served
model are the ones of the FP16 export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from resnext_triton.spec import Format, ModelSpec

ROOT = Path(__file__).resolve().parents[3]
EXPORTER = ROOT / "export" / "export.py"


@dataclass(frozen=True)
class ExportOptions:
    """What the harness asks of the exporter."""

    weights: str = "random"
    gpu: bool = True
    onnx: bool = True
    tensorrt: bool = False
    max_batch_size: int = 64
    instances: int = 2
    queue_delay_us: int = 100


@dataclass
class ExportStep:
    """One exporter invocation and what it printed."""

    name: str
    command: list[str]
    returncode: int | None = None
    lines: list[str] | None = None
    log: Path | None = None

    @property
    def ok(self) -> bool:
        """True when the exporter exited 0."""
        return self.returncode == 0


def export_steps(repo: Path, options: ExportOptions) -> list[ExportStep]:
    """The exporter command lines, in the order they run."""
    base = [sys.executable, str(EXPORTER), "--weights", options.weights, "--out", str(repo), "--keep", "1",
            "--no-progress", "--max-batch-size", str(options.max_batch_size),
            "--queue-delay-us", str(options.queue_delay_us),
            "--gpu-instances" if options.gpu else "--cpu-instances", str(options.instances)]
    if options.weights == "random":  # BatchNorm statistics from the photos: outputs that depend on the input
        base.append("--recalibrate-bn")
    steps = []
    formats = ["onnx"] if options.onnx else []
    if options.tensorrt:
        formats.append("tensorrt")
    if formats:
        steps.append(ExportStep(",".join(formats), [*base, "--formats", ",".join(formats)]))
    gpu = ["--device", "cuda", "--torchscript-fp16", "--channels-last"] if options.gpu else []
    if options.gpu and options.weights == "random":
        # random weights: FP16 rounding flips near-ties and moves small logits (measured on an H100:
        # max |diff| 0.21, 7.8 % of max |logit|); judged beyond the noise, bound recorded in the manifest
        gpu += ["--fp16-beyond-noise", "--fp16-max-rel", "0.15"]
    steps.append(ExportStep("torchscript", [*base, "--formats", "torchscript", *gpu]))
    return steps


def exporter_env(python_path: Sequence[Path] = ()) -> dict[str, str]:
    """The exporter's environment: this checkout's ``src/`` and the carried packages on PYTHONPATH."""
    env = dict(os.environ)
    parts = [str(ROOT / "src"), *(str(p) for p in python_path), *filter(None, env.get("PYTHONPATH", "").split(":"))]
    env["PYTHONPATH"] = ":".join(dict.fromkeys(parts))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _summary_lines(output: str) -> list[str]:
    """The exporter's per-format lines, its errors and warnings."""
    starts = (*(f.value for f in Format), "error", "WARNING:", "weights:")
    return [line for line in output.splitlines() if line.startswith(starts) or " formats exported " in line]


def run_export(step: ExportStep, log_dir: Path, env: dict[str, str], *, timeout_s: float,
               echo: Callable[[str], None] = print) -> ExportStep:
    """Run one exporter invocation; its whole output goes to ``log_dir/export_<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    step.log = log_dir / f"export_{step.name.replace(',', '_')}.log"
    echo(f"$ {' '.join(step.command[1:])}")
    try:
        proc = subprocess.run(step.command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        output, step.returncode = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        output += f"\n[stopped after {timeout_s:.0f} s: the time budget]\n"
        step.returncode = -1
    step.log.write_text(" ".join(step.command) + "\n\n" + output, encoding="utf-8")
    step.lines = _summary_lines(output) or output.strip().splitlines()[-3:]
    for line in step.lines:
        echo(f"  {line}")
    return step


def artifact(repo: Path, spec: ModelSpec, fmt: Format) -> Path | None:
    """The newest published file of ``fmt`` in the repository, or None."""
    from resnext_triton.triton.repository import latest_version  # needs tritonclient: carried, on sys.path later

    version = latest_version(repo / spec.model_name(fmt))
    path = version / fmt.filename if version is not None else None
    return path if path is not None and path.is_file() else None


def validation(path: Path) -> dict[str, object]:
    """The validation figures the exporter recorded beside an artifact ({} if none)."""
    try:
        from resnext_triton.triton.repository import MANIFEST

        data = json.loads((path.parent / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found = data.get("validation", {})
    return found if isinstance(found, dict) else {}
