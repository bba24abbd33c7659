"""The soak test's moving parts: client threads that keep requests in flight, and the memory sampler.

Every request is recorded (when it was sent, when it ended, whether it succeeded and why not),
so the report can tell, per fault, how many requests failed and when the service answered again.
The sampler reads the resident memory of the supervisor, tritonserver and each backend stub of
the state directory from ``/proc`` at a fixed interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resnext_triton.triton.local import procs
from resnext_triton.triton.local.state import ServerState, running_state


@dataclass(frozen=True)
class Request:
    """One request: seconds since the soak started, and its outcome."""

    sent: float
    ended: float
    ok: bool
    error: str = ""


class RequestLog:
    """Requests recorded by many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[Request] = []

    def add(self, request: Request) -> None:
        """Record one request."""
        with self._lock:
            self.requests.append(request)

    def snapshot(self) -> list[Request]:
        """The requests so far, in the order they ended."""
        with self._lock:
            return list(self.requests)


def _send(http_address: str, model: str, batch: np.ndarray, timeout_s: float) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_address, network_timeout=timeout_s, connection_timeout=timeout_s)
    try:
        inp = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=True)
        out = client.infer(model, [inp]).as_numpy("OUTPUT__0")
        if out is None or out.shape != (len(batch), 1000):
            raise RuntimeError(f"unexpected output shape {None if out is None else out.shape}")
    finally:
        client.close()


class Load:
    """``concurrency`` threads, each sending one request after another until stopped.

    Args:
        http_address: ``host:port`` of Triton's HTTP endpoint.
        model: the model to send to.
        batch: the input (N x 3 x 224 x 224, float32).
        concurrency: requests in flight.
        log: where requests are recorded.
        clock: seconds since the soak started.
        timeout_s: one request's limit.
    """

    def __init__(self, http_address: str, model: str, batch: np.ndarray, concurrency: int, log: RequestLog,
                 clock: Callable[[], float], timeout_s: float = 60.0) -> None:  # fmt: skip
        self.args = (http_address, model, batch, timeout_s)
        self.log = log
        self.clock = clock
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, name=f"soak-{i}", daemon=True) for i in range(concurrency)]

    def _run(self) -> None:
        while not self.stop_event.is_set():
            sent = self.clock()
            try:
                _send(*self.args)
                self.log.add(Request(sent, self.clock(), True))
            except Exception as exc:  # refused, reset, timeouts, Triton's errors: all are failures to count
                self.log.add(Request(sent, self.clock(), False, f"{type(exc).__name__}: {str(exc)[:160]}"))
                self.stop_event.wait(0.2)  # a server that is down refuses at once: do not spin

    def start(self) -> None:
        """Start the threads."""
        for thread in self.threads:
            thread.start()

    def stop(self, timeout_s: float = 90.0) -> None:
        """Ask the threads to stop and wait for requests in flight."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout_s)


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


@dataclass(frozen=True)
class Sample:
    """Memory of the server's processes at one moment (MB), and how many stubs ran."""

    at: float
    supervisor: float
    server: float
    stubs: float
    stub_count: int

    @property
    def total(self) -> float:
        """Everything the deployment holds."""
        return self.supervisor + self.server + self.stubs


@dataclass
class Sampler:
    """Samples the memory of a state directory's processes every ``every_s`` seconds in a thread."""

    state_dir: Path
    clock: Callable[[], float]
    every_s: float = 5.0
    samples: list[Sample] = field(default_factory=list)
    regions: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> Sample:
        """Take one sample (and remember the stubs' shm regions, to check they are gone at the end)."""
        state: ServerState | None = running_state(self.state_dir)
        stubs = procs.stubs(self.state_dir)
        self.regions.update(s.region for s in stubs)
        sample = Sample(
            at=self.clock(),
            supervisor=rss_mb(state.supervisor_pid) if state else 0.0,
            server=sum(rss_mb(pid) for pid in procs.server_pids(self.state_dir)),
            stubs=sum(rss_mb(s.pid) for s in stubs),
            stub_count=len(stubs),
        )
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def start(self) -> None:
        """Sample now, then every ``every_s`` seconds."""
        self.sample()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (after one last sample)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def monotonic_clock() -> Callable[[], float]:
    """Seconds since this call."""
    start = time.monotonic()
    return lambda: time.monotonic() - start
