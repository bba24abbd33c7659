"""The candidate Triton configurations of the config search, and where they are tried.

A :class:`Candidate` is one CPU instance count, max batch size and dynamic-batcher queue delay.
It is written into a scratch copy of one model's directory with the exporter's own command
(``export/export.py --configs-only ...``), so what is measured is exactly what that command
writes; the winner is printed as the same command on the user's repository.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resnext_triton.bench.cli import ROOT
from resnext_triton.bench.perf_csv import PerfPoint
from resnext_triton.spec import Format, ModelSpec

EXPORT_SCRIPT = "export/export.py"


@dataclass(frozen=True)
class Candidate:
    """One configuration to try."""

    instances: int
    max_batch_size: int
    queue_delay_us: int

    @property
    def label(self) -> str:
        """A short name: ``i2-mb8-d5000``."""
        return f"i{self.instances}-mb{self.max_batch_size}-d{self.queue_delay_us}"

    def export_args(self, fmt: Format, repo: Path) -> list[str]:
        """The exporter arguments that write this configuration into ``repo``."""
        return ["--configs-only", "--formats", fmt.value, "--out", str(repo), "--cpu-instances", str(self.instances),
                "--max-batch-size", str(self.max_batch_size), "--queue-delay-us", str(self.queue_delay_us)]


@dataclass
class CandidateResult:
    """The points measured for one candidate and its best one within the budget."""

    candidate: Candidate
    points: list[PerfPoint] = field(default_factory=list)
    best: PerfPoint | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"candidate": asdict(self.candidate), "label": self.candidate.label, "error": self.error,
                "seconds": self.seconds, "best": self.best.to_dict() if self.best else None,
                "points": [p.to_dict() for p in self.points]}


def candidates(instances: Sequence[int], max_batch_sizes: Sequence[int], delays: Sequence[int]) -> list[Candidate]:
    """The grid, without the combinations that cannot differ: max batch size 1 with a queue delay.

    A batch of one is full as soon as a request arrives, so the batcher never waits for a second.
    """
    grid = [Candidate(i, b, d) for i, b, d in itertools.product(instances, max_batch_sizes, delays)]
    smallest_delay = min(delays) if delays else 0
    return [c for c in grid if c.max_batch_size > 1 or c.queue_delay_us == smallest_delay]


def winner(results: Sequence[CandidateResult]) -> CandidateResult | None:
    """The candidate with the highest in-budget throughput (ties: fewer instances, smaller batch, less delay)."""

    def rank(r: CandidateResult) -> tuple[float, int, int, int]:
        c = r.candidate
        return (r.best.throughput or 0.0 if r.best else 0.0, -c.instances, -c.max_batch_size, -c.queue_delay_us)

    return max((r for r in results if r.best is not None), key=rank, default=None)


def apply_command(candidate: Candidate, fmt: Format, repo: Path) -> str:
    """The command that writes the winning configuration into the user's repository."""
    try:
        shown = repo.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = repo
    return shlex.join(["python", EXPORT_SCRIPT, *candidate.export_args(fmt, Path(shown))])


def model_format(model: str, spec: ModelSpec) -> Format:
    """The format of a model name such as ``resnext101_32x4d_onnx``.

    Raises:
        ValueError: if the name belongs to no CPU-servable format of ``spec``.
    """
    for fmt in (Format.ONNX, Format.TORCHSCRIPT):
        if spec.model_name(fmt) == model:
            return fmt
    raise ValueError(f"{model} is not the ONNX or TorchScript model of {spec.variant} (TensorRT needs a GPU)")


def scratch_copy(repo: Path, model: str, target: Path) -> Path:
    """Copy one model directory to ``target`` (newest version only; model files hard-linked when possible).

    The exporter's ``--configs-only`` replaces config files by rename, so hard-linked model files
    are never written through.

    Raises:
        ValueError: if the model has no exported version.
    """
    from resnext_triton.triton.repository import latest_version

    source = repo / model
    version = latest_version(source)
    if version is None:
        raise ValueError(f"{source} has no exported version (run export/export.py)")
    dest = target / model
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=lambda d, names: [n for n in names if n.isdigit() and Path(d) == source
                                                          and n != version.name])

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.rmtree(dest / version.name)
    shutil.copytree(version, dest / version.name, copy_function=link_or_copy)
    return dest


def apply_configs(candidate: Candidate, fmt: Format, repo: Path) -> list[str]:
    """Run ``export/export.py --configs-only`` for a candidate on ``repo``; returns the command.

    Raises:
        RuntimeError: if the exporter fails.
    """
    cmd = [sys.executable, str(ROOT / EXPORT_SCRIPT), *candidate.export_args(fmt, repo)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{EXPORT_SCRIPT} --configs-only failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return cmd


@contextlib.contextmanager
def scratch_repository(path: Path | None) -> Iterator[Path]:
    """``path`` (created if needed and kept), or a temporary directory removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="resnext-config-search-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

