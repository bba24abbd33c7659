"""What a soak run found: per fault, the failed requests and the time until the service answered again.

A fault's window runs from the moment it was injected to the next fault (or the end). Its failed
requests are those that ended in the window and failed; the service *answered again* at the first
successful request after the last failure of the window. A window without a failure recovered
at once (0 s).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resnext_triton.bench.soak_load import Request, Sample


@dataclass(frozen=True)
class Fault:
    """A fault as injected: when (seconds since the start), which, and what happened."""

    at: float
    kind: str
    detail: str
    injected: bool = True


@dataclass(frozen=True)
class Outcome:
    """A fault and its effect on the clients."""

    fault: Fault
    failed: int
    recovered_after: float | None  # None: no success after the last failure within the window


def outcomes(requests: Sequence[Request], faults: Sequence[Fault], end: float) -> list[Outcome]:
    """The effect of each fault on the requests that ended in its window."""
    found = []
    for i, fault in enumerate(faults):
        until = faults[i + 1].at if i + 1 < len(faults) else end + 1e9
        window = [r for r in requests if fault.at <= r.ended < until]
        failures = [r for r in window if not r.ok]
        if not failures:
            found.append(Outcome(fault, 0, 0.0))
            continue
        last = max(r.ended for r in failures)
        answered = [r.ended for r in window if r.ok and r.ended > last]
        found.append(Outcome(fault, len(failures), min(answered) - fault.at if answered else None))
    return found


@dataclass
class SoakResult:
    """Everything a soak run measured."""

    command: str
    duration_s: float
    concurrency: int
    batch: int
    model: str
    requests: list[Request]
    faults: list[Fault]
    samples: list[Sample]
    restarts: int
    reloads: int
    leftover_processes: int
    leftover_regions: int
    regions_seen: int
    recover_within_s: float

    @property
    def outcomes(self) -> list[Outcome]:
        """Per fault, its failed requests and recovery time."""
        return outcomes(self.requests, self.faults, self.duration_s)

    @property
    def failed_outside_faults(self) -> int:
        """Failed requests that ended before the first fault (nothing explains them)."""
        first = self.faults[0].at if self.faults else float("inf")
        return sum(1 for r in self.requests if not r.ok and r.ended < first)

    def problems(self) -> list[str]:
        """Why the run failed ([] when it passed)."""
        found = []
        limit = self.recover_within_s
        for o in self.outcomes:
            if o.fault.injected and (o.recovered_after is None or o.recovered_after > limit):
                found.append(f"{o.fault.kind} at {o.fault.at:.0f} s: not answering again within {limit:.0f} s")
        if self.failed_outside_faults:
            found.append(f"{self.failed_outside_faults} request(s) failed before any fault")
        if self.leftover_processes or self.leftover_regions:
            left = f"{self.leftover_processes} process(es), {self.leftover_regions} shm region(s)"
            found.append(f"after stop: {left} left")
        if not any(r.ok for r in self.requests):
            found.append("no request succeeded")
        return found


def _mb(value: float) -> str:
    return f"{value:,.0f}"


def markdown(result: SoakResult) -> str:
    """The report as markdown (printed and written as ``summary.md``)."""
    ok = sum(1 for r in result.requests if r.ok)
    failed = len(result.requests) - ok
    rate = ok / result.duration_s if result.duration_s else 0.0
    lines = [
        f"Soak: {result.duration_s:.0f} s of {result.concurrency} client(s) sending batches of {result.batch} "
        f"to `{result.model}`, {sum(f.injected for f in result.faults)} fault(s) injected",
        "",
        f"    {result.command}",
        "",
        f"- requests: {len(result.requests)} sent, {ok} succeeded, {failed} failed "
        f"({result.failed_outside_faults} outside fault windows); {rate:.2f} successful requests/s "
        f"({rate * result.batch:.2f} img/s over the whole run, faults included)",
        f"- supervisor: {result.restarts} server restart(s), {result.reloads} model reload(s)",
    ]
    if result.samples:
        totals = [s.total for s in result.samples]
        lines.append(
            f"- memory (supervisor + tritonserver + stubs, MB): {_mb(totals[0])} at start, {_mb(max(totals))} max, "
            f"{_mb(result.samples[-2].total if len(result.samples) > 1 else totals[-1])} at the end of the load; "
            f"stubs at most {max(s.stub_count for s in result.samples)} at once"
        )
    lines.append(
        f"- after stop: {result.leftover_processes} leftover process(es), {result.leftover_regions} of the "
        f"{result.regions_seen} /dev/shm region(s) seen still present"
    )
    lines += ["", "| # | at (s) | fault | what happened | failed requests | answered again after (s) |",
              "|---:|---:|---|---|---:|---:|"]  # fmt: skip
    for i, o in enumerate(result.outcomes, 1):
        after = "never" if o.recovered_after is None else f"{o.recovered_after:.1f}"
        lines.append(f"| {i} | {o.fault.at:.0f} | {o.fault.kind} | {o.fault.detail} | {o.failed} | {after} |")
    problems = result.problems()
    lines += ["", "PASS" if not problems else "FAIL: " + "; ".join(problems)]
    return "\n".join(lines) + "\n"


def write(result: SoakResult, run_dir: Path) -> Path:
    """``summary.md``, ``requests.csv``, ``faults.csv`` and ``memory.csv`` in ``run_dir``; returns the summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "requests.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["sent_s", "ended_s", "ok", "error"])
        out.writerows([f"{r.sent:.3f}", f"{r.ended:.3f}", int(r.ok), r.error] for r in result.requests)
    with open(run_dir / "faults.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["at_s", "fault", "detail", "failed_requests", "answered_again_after_s"])
        for o in result.outcomes:
            after = "" if o.recovered_after is None else f"{o.recovered_after:.2f}"
            out.writerow([f"{o.fault.at:.2f}", o.fault.kind, o.fault.detail, o.failed, after])
    with open(run_dir / "memory.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["at_s", "supervisor_mb", "tritonserver_mb", "stubs_mb", "stubs", "total_mb"])
        out.writerows(
            [f"{s.at:.1f}", f"{s.supervisor:.1f}", f"{s.server:.1f}", f"{s.stubs:.1f}", s.stub_count, f"{s.total:.1f}"]
            for s in result.samples
        )
    summary = run_dir / "summary.md"
    summary.write_text(markdown(result), encoding="utf-8")
    return summary
