"""The classify command when its real Triton freezes (SIGSTOP) or dies (SIGKILL) in the middle of a run.

The tests start a Triton of their own (not the session's) on free ports over a copy of the
exported ONNX model, run ``client/classify.py`` in a subprocess over a folder of many copies of a
photo, and freeze or kill the tritonserver process once results are coming out: the command must
end with exit 3 and one error line, never a traceback, and soon (not after --request-timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resnext_triton.client.cli import EXIT_SERVER
from resnext_triton.spec import Format
from resnext_triton.triton.local import LocalTriton, ServerConfig, ServerError
from resnext_triton.triton.process import pid_alive

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "client" / "classify.py"
COPIES = 60
TIMEOUT_S = 3  # the CLI's --timeout: also the watchdog's patience and its probe's limit


class OwnTriton:
    """This module's Triton: tests may freeze or kill it; :meth:`get` starts a new one after a kill."""

    def __init__(self, repo: Path, state_dir: Path):
        self.config = ServerConfig(
            repo=repo, state_dir=state_dir, http_port=0, grpc_port=0, metrics_port=0, timeout_s=600
        )
        self.triton: LocalTriton | None = None

    def get(self) -> LocalTriton:
        if self.triton is None or not pid_alive(self.triton.state.pid):
            self.reap()
            self.triton = LocalTriton(self.config)
            try:
                self.triton.start()
            except ServerError as exc:
                pytest.fail(f"the local Triton did not start: {exc}\n--- Triton log ---\n{exc.log_tail}")
        return self.triton

    def reap(self) -> None:
        """Stop the server, and what a killed one leaves behind: its stubs and their shared memory."""
        if self.triton is None:
            return
        pid = self.triton.state.pid
        regions = _shared_memory_of_group(pid)
        self.triton.stop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the stubs of a killed server run on in its process group
        deadline = time.monotonic() + 10
        while _group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for region in regions:
            region.unlink(missing_ok=True)
        self.triton = None


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    members.append(int(entry.name))
    return members


def _shared_memory_of_group(pgid: int) -> set[Path]:
    """The /dev/shm regions that the processes of a server's group have mapped."""
    regions = set()
    for pid in _group_members(pgid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                path = line.split(maxsplit=5)[-1] if len(line.split()) >= 6 else ""
                if path.startswith("/dev/shm/triton_"):
                    regions.add(Path(path))
    return regions


@pytest.fixture(scope="module")
def own_triton(exported_repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnTriton]:
    base = tmp_path_factory.mktemp("own_triton")
    model = exported_repo.spec.model_name(Format.ONNX)
    shutil.copytree(exported_repo.path / model, base / "repo" / model)
    server = OwnTriton(base / "repo", base / "state")
    try:
        yield server
    finally:
        server.reap()


@pytest.fixture(scope="module")
def photo_dir(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """COPIES copies of a real photo: one request each (-b 1) keeps the run going for a while."""
    folder = tmp_path_factory.mktemp("many")
    data = photos[0].read_bytes()
    for i in range(COPIES):
        (folder / f"photo{i:03d}.jpg").write_bytes(data)
    return folder


def _address(triton: LocalTriton, protocol: str) -> str:
    return triton.grpc_url if protocol == "grpc" else triton.http_url.removeprefix("http://")


class Run:
    """``classify.py`` in a subprocess, its JSON lines read as they come."""

    def __init__(self, folder: Path, protocol: str, address: str):
        argv = [str(LAUNCHER), str(folder), "-i", protocol, "-u", address, "-b", "1", "--json", "-q"]
        self.proc = subprocess.Popen(
            [sys.executable, *argv, "--timeout", str(TIMEOUT_S)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_results(self, count: int) -> None:
        for _ in range(count):
            try:
                self.lines.get(timeout=120)
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no results from classify.py: {self.proc.communicate()[1]}")

    def finish(self) -> tuple[int, str, float]:
        started = time.monotonic()
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        code = self.proc.wait(timeout=120)
        elapsed = time.monotonic() - started
        self._reader.join(timeout=10)
        return code, err, elapsed

    def printed(self) -> list[dict[str, object]]:
        """Every result line the command printed (each must be valid JSON)."""
        return [json.loads(line) for line in self.output]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_server_frozen_mid_run_ends_the_run_soon_with_exit_3(own_triton: OwnTriton, photo_dir: Path, protocol: str):
    triton = own_triton.get()
    address = _address(triton, protocol)
    run = Run(photo_dir, protocol, address)
    run.wait_for_results(3)
    os.kill(triton.state.pid, signal.SIGSTOP)
    try:
        code, err, elapsed = run.finish()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(triton.state.pid, signal.SIGCONT)
    assert code == EXIT_SERVER, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: Triton at {address} ({protocol}) stopped answering: a request has waited "), err
    assert err.rstrip().endswith("the liveness probe failed: timed out"), err
    # the watchdog's patience, then its probe's limit, a poll and the exit; not --request-timeout (300 s)
    assert elapsed < 2 * TIMEOUT_S + 5
    assert len(run.printed()) < COPIES


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_server_killed_mid_run_ends_the_run_with_exit_3_and_one_line(
    own_triton: OwnTriton, photo_dir: Path, protocol: str
):
    triton = own_triton.get()  # a new one after the kill of the previous test
    address = _address(triton, protocol)
    run = Run(photo_dir, protocol, address)
    run.wait_for_results(3)
    os.kill(triton.state.pid, signal.SIGKILL)
    code, err, elapsed = run.finish()
    assert code == EXIT_SERVER, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: lost Triton at {address} ({'gRPC' if protocol == 'grpc' else 'HTTP'}): "), err
    assert elapsed < TIMEOUT_S + 5
    printed = run.printed()
    assert 3 <= len(printed) < COPIES
    assert all(line["error"] is None for line in printed[:3])
