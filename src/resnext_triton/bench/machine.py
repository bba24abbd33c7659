"""The machine a benchmark ran on: CPU, cores, load, versions, and its measured SGEMM ceiling."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

GFLOP_PER_IMAGE = 16.0
"""ResNeXt101-32x4d at 224x224: 8.0 GMACs, i.e. 16 GFLOP per image (DESIGN.md)."""

DISTRIBUTIONS = (
    "resnext-triton", "numpy", "pillow", "torch", "onnxruntime", "onnx", "tritonclient", "nvidia-pytriton",
    "matplotlib",
)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """CPUs this process may run on (affinity), falling back to os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def memory_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo."""
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except (OSError, ValueError, IndexError):
        pass
    return None


def versions() -> dict[str, str]:
    """Python and the installed versions of the distributions the benchmarks touch."""
    found = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    """CPU time (utime + stime, clock ticks) and command line of every process, from /proc."""
    ticks: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
            fields = stat[stat.rindex(")") + 2 :].split()
            used = int(fields[11]) + int(fields[12])
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        ticks[int(entry.name)] = (used, args or stat[stat.index("(") : stat.rindex(")") + 1])
    return ticks


def busy_processes(min_cpu: float = 20.0, *, interval_s: float = 1.0, exclude: set[int] | None = None) -> list[str]:
    """Processes that used at least ``min_cpu`` % of one CPU over the next ``interval_s`` seconds.

    Sampled from /proc (utime + stime before and after), busiest first; the calling process and
    ``exclude`` are left out. Returns [] where /proc is not available.
    """
    before = _cpu_ticks()
    time.sleep(interval_s)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    skip = {os.getpid(), *(exclude or set())}
    busy = []
    for pid, (used, args) in after.items():
        if pid in skip or pid not in before:
            continue
        cpu = 100.0 * (used - before[pid][0]) / hz / interval_s
        if cpu >= min_cpu:
            busy.append((cpu, f"pid {pid} {cpu:.0f}% {args[:100]}"))
    return [line for _, line in sorted(busy, reverse=True)]


@dataclass(frozen=True)
class LoadSnapshot:
    """The 1/5/15-minute load averages and the busy processes at one moment."""

    at: str
    loadavg: tuple[float, float, float]
    busy: tuple[str, ...]

    @classmethod
    def now(cls, *, exclude: set[int] | None = None) -> LoadSnapshot:
        """Take a snapshot (processes above 20 % CPU, excluding ``exclude``)."""
        return cls(at=time.strftime("%Y-%m-%d %H:%M:%S"), loadavg=os.getloadavg(),
                   busy=tuple(busy_processes(exclude=exclude)))

    def line(self) -> str:
        """One line for a report."""
        busy = "; ".join(self.busy) if self.busy else "no other process above 20% CPU"
        return f"{self.at} load {self.loadavg[0]:.2f} {self.loadavg[1]:.2f} {self.loadavg[2]:.2f} ({busy})"


@dataclass(frozen=True)
class SgemmResult:
    """The best float32 matrix-multiply rate measured, per library."""

    n: int
    numpy_gflops: float
    torch_gflops: float | None

    @property
    def gflops(self) -> float:
        """The machine's ceiling: the faster of the two libraries."""
        return max(self.numpy_gflops, self.torch_gflops or 0.0)

    @property
    def images_per_s(self) -> float:
        """The ceiling in ResNeXt101-32x4d images/s: GFLOP/s divided by 16 GFLOP per image."""
        return self.gflops / GFLOP_PER_IMAGE

    def to_dict(self) -> dict[str, float | int | None]:
        """A JSON-ready dict."""
        return {**asdict(self), "gflops": self.gflops, "images_per_s": self.images_per_s}


def _best_rate(matmul: object, n: int, repeats: int) -> float:
    flops = 2.0 * n**3
    best = float("inf")
    matmul()  # type: ignore[operator]  # warm-up: thread pools, page faults
    for _ in range(repeats):
        start = time.perf_counter()
        matmul()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def measure_sgemm(n: int = 2048, repeats: int = 5, *, use_torch: bool = True) -> SgemmResult:
    """Time float32 ``n x n`` matrix products with numpy (and torch), best of ``repeats``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    numpy_rate = _best_rate(lambda: np.matmul(a, b, out=out), n, repeats)
    torch_rate = None
    if use_torch:
        try:
            import torch
        except ImportError:
            torch = None  # type: ignore[assignment]
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            tout = torch.empty((n, n), dtype=torch.float32)
            with torch.inference_mode():
                torch_rate = _best_rate(lambda: torch.matmul(ta, tb, out=tout), n, repeats)
    return SgemmResult(n=n, numpy_gflops=numpy_rate, torch_gflops=torch_rate)


def machine_info() -> dict[str, object]:
    """CPU model, cores, memory, OS and versions, JSON-ready."""
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(memory_gib() or 0.0, 1),
        "os": platform.platform(),
        "versions": versions(),
    }
