"""The machine a benchmark ran on: CPU, cores, load, versions, and its measured SGEMM ceiling."""

from __future__ import annotations

import os
import platform
import threading
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


def _processes() -> dict[int, tuple[int, int, str]]:
    """Parent pid, CPU time (utime + stime, clock ticks) and command line of every process, from /proc."""
    found: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
            fields = stat[stat.rindex(")") + 2 :].split()
            ppid, used = int(fields[1]), int(fields[11]) + int(fields[12])
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry.name)] = (ppid, used, args or stat[stat.index("(") : stat.rindex(")") + 1])
    return found


def _own_tree(procs: dict[int, tuple[int, int, str]]) -> set[int]:
    """This process and all its descendants (the servers, perf_analyzer and clients it started)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += [c for c in children.get(pid, []) if c not in tree]
    return tree


def foreign_cpu(interval_s: float = 1.0, min_cpu: float = 20.0) -> tuple[float, list[str]]:
    """CPU used by processes outside this process tree over ``interval_s``: (total %, busy lines).

    Sampled from /proc (utime + stime before and after); 100 % is one core. The lines name the
    processes above ``min_cpu`` %, busiest first. (0.0, []) where /proc is not available.
    """
    before = _processes()
    time.sleep(interval_s)
    after = _processes()
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    mine = _own_tree(after) | _own_tree(before)
    total, busy = 0.0, []
    for pid, (_, used, args) in after.items():
        if pid in mine or pid not in before:
            continue
        cpu = 100.0 * (used - before[pid][1]) / hz / interval_s
        total += cpu
        if cpu >= min_cpu:
            busy.append((cpu, f"pid {pid} {cpu:.0f}% {args[:100]}"))
    return total, [line for _, line in sorted(busy, reverse=True)]


def busy_processes(min_cpu: float = 20.0, *, interval_s: float = 1.0) -> list[str]:
    """Processes outside this process tree that used at least ``min_cpu`` % of a core over ``interval_s``."""
    return foreign_cpu(interval_s, min_cpu)[1]


class LoadMonitor:
    """Samples, in a background thread, the CPU other processes take while a benchmark runs.

    Every ``period_s`` it measures for one second the CPU used outside this process tree (100 % =
    one core) and remembers the busiest such processes, so a report can say how quiet the machine was.
    """

    def __init__(self, period_s: float = 10.0) -> None:
        self.period_s = period_s
        self.samples: list[float] = []
        self.loadavg: list[float] = []
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load-monitor", daemon=True)

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            total, busy = foreign_cpu()
            self.samples.append(total)
            self.loadavg.append(os.getloadavg()[0])
            for line in busy:
                name = line.split("% ", 1)[1][:80]
                cpu = float(line.split()[2].rstrip("%"))
                self.seen[name] = max(self.seen.get(name, 0.0), cpu)
            self._stop.wait(self.period_s)

    def summary(self) -> str:
        """One line: mean and peak CPU taken by other processes, peak load average, who."""
        if not self.samples:
            return "not sampled"
        mean = sum(self.samples) / len(self.samples)
        who = "; ".join(f"{name} (up to {cpu:.0f}%)" for name, cpu in
                        sorted(self.seen.items(), key=lambda kv: -kv[1])[:5]) or "none above 20%"
        return (f"other processes used {mean:.0f}% CPU on average, {max(self.samples):.0f}% at peak "
                f"(100% = one core; {len(self.samples)} samples); 1-min load average up to {max(self.loadavg):.2f}; "
                f"busy others: {who}")

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"samples_cpu_percent": self.samples, "loadavg_1min": self.loadavg, "busy_others": self.seen,
                "summary": self.summary()}


@dataclass(frozen=True)
class LoadSnapshot:
    """The 1/5/15-minute load averages and the busy processes at one moment."""

    at: str
    loadavg: tuple[float, float, float]
    busy: tuple[str, ...]

    @classmethod
    def now(cls) -> LoadSnapshot:
        """Take a snapshot (other processes above 20 % of a core over one second)."""
        return cls(at=time.strftime("%Y-%m-%d %H:%M:%S"), loadavg=os.getloadavg(), busy=tuple(busy_processes()))

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
