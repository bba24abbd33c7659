"""The processes and ``/dev/shm`` regions of a state directory's Triton: find them, make regions private, clean up.

A tritonserver started from a state directory names that directory's backend directory on its
command line, and every Python-backend stub it launches runs the stub binary copied into it, so a
process belongs to a state directory by what its command line says, not by a pid that may have
been reused. A stub's command line (Triton 2.51's Python backend) is::

    <stub> <model file> <shm region> <shm size> <shm growth> <parent pid> <backend dir> <msgq size> <instance> ...

The region is a file in ``/dev/shm`` that the server creates for the stub. Killing a server with
SIGKILL leaves both behind; :func:`cleanup` removes them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from resnext_triton.triton.local.state import cmdline
from resnext_triton.triton.process import pid_alive

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
REGION_PREFIX = "triton_"
BACKENDS_DIR = "backends"
STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class Stub:
    """A running Python-backend stub: one model instance."""

    pid: int
    parent: int  # the tritonserver it serves (from its command line)
    model: str  # the model directory in the serving view ('' if the file is elsewhere)
    version: str
    instance: str
    region: str
    started: int  # start time in clock ticks since boot (orders stubs by age)


def backend_dir(state_dir: Path) -> Path:
    """Where a state directory keeps the backends tritonserver loads."""
    return state_dir / BACKENDS_DIR


def stub_path(state_dir: Path) -> Path:
    """The stub binary a state directory's servers launch."""
    return backend_dir(state_dir) / "python" / STUB_NAME


def pids() -> Iterator[int]:
    """Every process id in /proc."""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                yield int(entry.name)


def start_ticks(pid: int) -> int:
    """When a process started, in clock ticks since boot (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[19])  # field 22 of stat; fields[0] is field 3 (state)


def _parse_stub(pid: int, argv: list[str], view: Path | None) -> Stub | None:
    if len(argv) < 9 or not argv[5].isdigit():
        return None
    model, version = "", ""
    if view is not None:
        with contextlib.suppress(ValueError):
            parts = Path(argv[1]).relative_to(view).parts
            model, version = parts[0], parts[1] if len(parts) > 2 else ""
    return Stub(pid, int(argv[5]), model, version, argv[8], argv[2], start_ticks(pid))


def stubs(state_dir: Path, view: Path | None = None, *, server_pid: int | None = None) -> list[Stub]:
    """The live stubs a state directory's servers launched (only those of ``server_pid`` if given)."""
    binary = str(stub_path(state_dir))
    found = []
    for pid in pids():
        argv = cmdline(pid)
        if argv and argv[0] == binary and pid_alive(pid):
            stub = _parse_stub(pid, argv, view)
            if stub is not None and (server_pid is None or stub.parent == server_pid):
                found.append(stub)
    return found


def server_pids(state_dir: Path) -> list[int]:
    """Live tritonserver processes started with this state directory's backends."""
    flag = f"--backend-directory={backend_dir(state_dir)}"
    found = []
    for pid in pids():
        argv = cmdline(pid)
        if argv and argv[0].endswith("tritonserver") and flag in argv and pid_alive(pid):
            found.append(pid)
    return found


def kill_and_wait(pids: Iterable[int], timeout_s: float = 10.0) -> list[int]:
    """SIGKILL processes and wait until they are gone; returns those that were signalled."""
    killed = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def _region_path(name: str) -> Path | None:
    if not name.startswith(REGION_PREFIX) or "/" in name or name in (".", ".."):
        return None
    return SHM_DIR / name


def privatize_regions(names: Iterable[str]) -> int:
    """Make our regions readable by their owner only (the Python backend makes them 0644); returns the count."""
    changed = 0
    for name in names:
        path = _region_path(name)
        with contextlib.suppress(OSError):
            if path is not None and path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
                path.chmod(0o600)
                changed += 1
    return changed


def remove_regions(names: Iterable[str]) -> list[str]:
    """Unlink our ``/dev/shm`` regions of these names (others' files are left alone); returns those removed."""
    removed = []
    for name in set(names):
        path = _region_path(name)
        with contextlib.suppress(OSError):
            if path is not None and path.stat().st_uid == os.getuid():
                path.unlink()
                removed.append(name)
    return sorted(removed)


@dataclass
class Cleanup:
    """What :func:`cleanup` removed."""

    killed: list[int] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.killed or self.regions)

    def describe(self) -> str:
        """One line for logs and the CLI."""
        return f"{len(self.killed)} process(es) killed, {len(self.regions)} /dev/shm region(s) removed"


def leftovers(state_dir: Path) -> tuple[list[int], list[str]]:
    """(pids, region names) of every server and stub of this state directory still running."""
    found = stubs(state_dir)
    return server_pids(state_dir) + [s.pid for s in found], [s.region for s in found]


def cleanup(state_dir: Path, regions: Iterable[str] = ()) -> Cleanup:
    """Kill every tritonserver and stub of this state directory and remove their ``/dev/shm`` regions.

    Args:
        state_dir: the (resolved) state directory.
        regions: region names recorded earlier (stubs that died already no longer name theirs).
    """
    pids, live_regions = leftovers(state_dir)
    done = Cleanup(killed=kill_and_wait(pids))
    done.regions = remove_regions([*regions, *live_regions])
    if done:
        log.debug("cleaned up after the server of %s: %s", state_dir, done.describe())
    return done
