"""The four ratios of the benchmark brief, each against its goal, from what a sweep measured.

(a) Triton served / in-process ONNX Runtime, per batch size; (b) ``classify.py`` end to end /
the torch.hub example loop; (c) the client's threaded preprocessing / one thread; (d) the best
served images/s / the machine's SGEMM ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from resnext_triton.bench import machine
from resnext_triton.bench.baseline_suite import BaselineReport
from resnext_triton.bench.perf_csv import PerfPoint
from resnext_triton.bench.report import number
from resnext_triton.spec import Format, ModelSpec


@dataclass(frozen=True)
class Ratio:
    """A measured ratio against its goal: ``numerator / denominator``."""

    key: str
    title: str
    value: float | None
    goal: float | None
    numerator: str
    denominator: str
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the goal is met (None when there is no goal or the ratio could not be measured)."""
        return None if self.value is None or self.goal is None else self.value >= self.goal

    @property
    def verdict(self) -> str:
        """``met``, ``BELOW goal``, ``no goal`` or ``not measured``."""
        if self.value is None:
            return "not measured"
        if self.goal is None:
            return "no goal"
        return "met" if self.met else "BELOW goal"

    def line(self) -> str:
        """One console line."""
        value = "n/a" if self.value is None else f"{self.value:.2f}"
        goal = "no goal" if self.goal is None else f"goal >= {self.goal:g}: {self.verdict}"
        note = f"  ({self.note})" if self.note else ""
        return f"({self.key}) {self.title}: {value}  [{goal}]  {self.numerator} / {self.denominator}{note}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {**asdict(self), "met": self.met}


def _best(points: Sequence[PerfPoint], **match: Any) -> PerfPoint | None:
    found = [p for p in points if p.ok and all(getattr(p, k) == v for k, v in match.items())]
    return max(found, key=lambda p: p.throughput or 0.0, default=None)


def compute_ratios(points: Sequence[PerfPoint], base: BaselineReport, spec: ModelSpec, baseline_batch: int
                   ) -> list[Ratio]:
    """The four ratios of the benchmark brief (a per batch size), from what was measured."""
    ratios = []
    onnx = spec.model_name(Format.ONNX)
    for ort in (r for r in base.results if r.name.startswith("ONNX Runtime in-process")):
        served = _best(points, model=onnx, protocol="grpc", batch=ort.batch)
        http = _best(points, model=onnx, protocol="http", batch=ort.batch)
        note = f"best over concurrency; gRPC c{served.concurrency}" if served else "no gRPC point"
        if http and http.throughput:
            note += f"; HTTP {http.throughput / ort.throughput:.2f} (c{http.concurrency})"
        ratios.append(Ratio(f"a/b{ort.batch}", f"Triton served / in-process ONNX Runtime, batch {ort.batch}",
                            served.throughput / ort.throughput if served and served.throughput else None, 0.95,
                            f"{number(served.throughput if served else None, 2)} img/s served ({onnx}, gRPC)",
                            f"{ort.throughput:.2f} img/s in-process", note))
    classify, hub = base.find("classify.py"), base.find("torch.hub example", baseline_batch)
    ratios.append(Ratio("b", "classify.py end to end / torch.hub example loop",
                        classify.throughput / hub.throughput if classify and hub else None, 1.5,
                        f"{number(classify.throughput if classify else None, 2)} img/s classify.py",
                        f"{number(hub.throughput if hub else None, 2)} img/s torch.hub loop",
                        f"batch {baseline_batch}, {classify.images if classify else '?'} photos"))
    if len(base.preprocessing) >= 2:
        ref, thr = base.preprocessing[0], base.preprocessing[1]
        ratios.append(Ratio("c", "client threaded preprocessing / single-threaded reference",
                            thr.throughput / ref.throughput, 1.8, f"{thr.throughput:.1f} img/s ({thr.workers} threads)",
                            f"{ref.throughput:.1f} img/s (1 thread)",
                            f"identical output: {thr.identical}; {machine.usable_cores()} cores"))
    else:
        ratios.append(Ratio("c", "client threaded preprocessing / single-threaded reference", None, 1.8, "-", "-"))
    best = _best(points)
    sgemm = base.sgemm
    ratios.append(Ratio("d", "best served images/s / SGEMM ceiling (GFLOP/s / 16 GFLOP)",
                        best.throughput / sgemm.images_per_s if best and best.throughput and sgemm else None, None,
                        f"{number(best.throughput if best else None, 2)} img/s "
                        f"({best.model} {best.protocol} b{best.batch} c{best.concurrency})" if best else "-",
                        f"{sgemm.images_per_s:.2f} img/s ({sgemm.gflops:.0f} GFLOP/s)" if sgemm else "-",
                        "the fraction of the peak matrix-multiply rate the served model reaches"))
    return ratios
