"""The supervision pieces without Triton: serving view, processes and shm regions, health, served versions, pruning."""

from __future__ import annotations

import http.server
import importlib.machinery
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image

from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.config import ServingOptions
from resnext_triton.triton.local import health, probes, procs, served
from resnext_triton.triton.local.state import cmdline
from resnext_triton.triton.local.supervisor import describe_exit
from resnext_triton.triton.local.view import RELOAD_MARKER, ServingView
from resnext_triton.triton.process import pid_alive
from resnext_triton.triton.repository import prune_versions, write_configs

ONNX = "resnext101_32x4d_onnx"
PRE = "resnext101_32x4d_preprocess"


def make_repo(root: Path) -> Path:
    """Configs for ONNX (with its image pipeline) and version 1 holding a file."""
    model_dir = write_configs(root, ModelSpec(), Format.ONNX, ServingOptions())
    (model_dir / "1").mkdir()
    (model_dir / "1" / "model.onnx").write_bytes(b"onnx")
    return root


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_view_links_the_models_mirrors_versions_and_never_writes_into_the_repository(tmp_path):
    repo = make_repo(tmp_path / "repo")
    before = snapshot(repo)
    view = ServingView(tmp_path / "state" / "serving", repo)
    view.rebuild([ONNX, PRE])
    assert sorted(p.name for p in view.root.iterdir()) == [ONNX, PRE]
    config = view.root / ONNX / "config.pbtxt"
    assert config.is_symlink() and config.resolve() == (repo / ONNX / "config.pbtxt").resolve()
    assert (view.root / ONNX / "configs").is_symlink()
    version = view.root / ONNX / "1"
    assert version.is_dir() and not version.is_symlink()  # the view's own directory
    assert (version / "model.onnx").resolve() == (repo / ONNX / "1" / "model.onnx").resolve()
    assert snapshot(repo) == before

    # the Python model's bytecode is in the view, already valid: importing it writes nothing
    source = view.root / PRE / "1" / "model.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert cached.is_file() and not (repo / PRE / "1" / "__pycache__").exists()
    before_import = (source.parent.stat().st_mtime_ns, cached.stat().st_mtime_ns)
    importlib.machinery.SourceFileLoader("pre_model", str(source)).get_code("pre_model")
    assert (source.parent.stat().st_mtime_ns, cached.stat().st_mtime_ns) == before_import


def test_view_follows_new_and_pruned_versions_and_models(tmp_path):
    repo = make_repo(tmp_path / "repo")
    view = ServingView(tmp_path / "serving", repo)
    view.rebuild([ONNX])
    assert view.sync([ONNX]) == []  # nothing changed
    (repo / ONNX / ".tmp-123-abc").mkdir()  # an export still writing: not a version yet
    (repo / ONNX / "2").mkdir()
    (repo / ONNX / "2" / "model.onnx").write_bytes(b"onnx v2")
    assert view.sync([ONNX]) == [ONNX]
    assert (view.root / ONNX / "2" / "model.onnx").read_bytes() == b"onnx v2"
    assert not (view.root / ONNX / ".tmp-123-abc").exists()
    for path in (repo / ONNX / "1").iterdir():
        path.unlink()
    (repo / ONNX / "1").rmdir()
    assert view.sync([ONNX]) == [ONNX]
    assert sorted(p.name for p in (view.root / ONNX).iterdir() if p.name.isdigit()) == ["2"]
    assert view.sync([]) == [ONNX] and list(view.root.iterdir()) == []


def test_reload_request_changes_the_model_directory(tmp_path):
    repo = make_repo(tmp_path / "repo")
    view = ServingView(tmp_path / "serving", repo)
    view.rebuild([ONNX])
    directory = view.root / ONNX
    os.utime(directory, ns=(0, 0))
    view.request_reload(ONNX)
    assert (directory / RELOAD_MARKER).is_file() and directory.stat().st_mtime_ns > 0
    assert view.sync([ONNX]) == []  # the marker is the view's own, not a model entry


@pytest.fixture
def fake_stub(tmp_path) -> Iterator[tuple[Path, subprocess.Popen[bytes], str]]:
    """A process whose command line is a stub's (of ``<tmp>/state``), and a /dev/shm region it 'uses'."""
    state_dir = tmp_path / "state"
    stub = procs.stub_path(state_dir)
    stub.parent.mkdir(parents=True)
    script = state_dir / "serving" / ONNX / "3" / "model.onnx"
    script.parent.mkdir(parents=True)
    script.write_text("import time\ntime.sleep(60)\n")
    region = f"triton_python_backend_shm_region_{uuid.uuid4()}"
    (procs.SHM_DIR / region).write_bytes(b"\0" * 64)
    (procs.SHM_DIR / region).chmod(0o644)  # what the Python backend does
    argv = [str(stub), str(script), region, "1048576", "1048576", "4242", str(stub.parent), "336", f"{ONNX}_0_0", "x"]
    proc = subprocess.Popen(argv, executable=sys.executable)
    try:
        deadline = time.monotonic() + 10
        while not procs.stubs(state_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield state_dir, proc, region
    finally:
        proc.kill()
        proc.wait()
        (procs.SHM_DIR / region).unlink(missing_ok=True)


def test_stubs_are_found_by_command_line_made_private_and_cleaned_up(fake_stub, tmp_path):
    state_dir, proc, region = fake_stub
    (found,) = procs.stubs(state_dir, state_dir / "serving")
    assert (found.pid, found.parent, found.model, found.version) == (proc.pid, 4242, ONNX, "3")
    assert (found.instance, found.region) == (f"{ONNX}_0_0", region) and found.started > 0
    assert procs.stubs(state_dir, server_pid=1) == []  # another server's
    assert procs.stubs(tmp_path / "other-state") == []  # another state directory's
    assert procs.privatize_regions([region, "not-ours", "../etc/passwd"]) == 1
    assert (procs.SHM_DIR / region).stat().st_mode & 0o777 == 0o600
    done = procs.cleanup(state_dir, ["triton_never_existed"])
    assert done.killed == [proc.pid] and done.regions == [region]
    assert not pid_alive(proc.pid) and not (procs.SHM_DIR / region).exists()
    assert not procs.cleanup(state_dir)  # nothing left


def test_a_ready_model_missing_a_stub_is_broken():
    configs = {
        ONNX: {"backend": "onnxruntime", "instance_group": [{"count": 2}]},
        f"{ONNX}_image": {"platform": "ensemble"},
    }
    index = [
        {"name": ONNX, "version": "1", "state": "UNAVAILABLE"},
        {"name": ONNX, "version": "2", "state": "READY"},
        {"name": f"{ONNX}_image", "version": "1", "state": "READY"},
    ]

    def stub(pid: int, version: str) -> procs.Stub:
        return procs.Stub(pid, 1, ONNX, version, f"{ONNX}_0_{pid}", "r", 0)

    def lookup(model: str, version: str) -> dict | None:
        return configs.get(model)

    assert health.missing_stubs(index, [stub(1, "2"), stub(2, "2")], lookup) == {}
    assert health.missing_stubs(index, [stub(1, "2"), stub(2, "1")], lookup) == {
        ONNX: "1 of 2 backend stub process(es) of version 2 died"
    }
    assert health.expected_instances({"backend": "python"}) == 1
    assert health.missing_stubs(index, [], lambda m, v: None) == {}  # unknown config: not judged


def test_exit_descriptions_and_probe_image():
    assert describe_exit(-6) == "was killed by signal 6 (SIGABRT)"
    assert describe_exit(1) == "exited with status 1"
    with Image.open(io.BytesIO(probes.tiny_png())) as image:
        image.load()
        assert image.size == (2, 2) and image.mode == "RGB"


class _Index(http.server.BaseHTTPRequestHandler):
    entries: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.dumps(self.entries).encode()
        self.send_response(200 if self.path == "/v2/repository/index" else 404)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_triton(tmp_path) -> Iterator[tuple[Path, type[_Index]]]:
    """A process that looks like a tritonserver serving ``<tmp>/repo`` through a view, and its HTTP index."""
    repo = make_repo(tmp_path / "repo")
    for version in (2, 3):
        (repo / ONNX / str(version)).mkdir()
    view = ServingView(tmp_path / "serving", repo)
    view.rebuild([ONNX])
    handler = type("Index", (_Index,), {"entries": [{"name": ONNX, "version": "2", "state": "READY"}]})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    argv = [
        str(tmp_path / "bin" / "tritonserver"), "-c", "import time; time.sleep(60)",
        f"--model-repository={view.root}", "--http-address=127.0.0.1", f"--http-port={server.server_port}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, executable=sys.executable)
    deadline = time.monotonic() + 10
    while cmdline(proc.pid)[:1] != argv[:1] and time.monotonic() < deadline:  # until it has exec'ed
        time.sleep(0.02)
    try:
        yield repo, handler
    finally:
        proc.kill()
        proc.wait()
        server.shutdown()


def test_pruning_spares_the_version_a_running_server_serves(fake_triton):
    repo, handler = fake_triton
    versions, unknown = served.served_versions(repo / ONNX)
    assert (versions, unknown) == ({2}, [])
    assert served.served_versions(repo / PRE) == (set(), [])  # a model it does not serve
    assert prune_versions(repo / ONNX, keep=1) == [1]
    assert sorted(p.name for p in (repo / ONNX).iterdir() if p.name.isdigit()) == ["2", "3"]
    handler.entries = [{"name": ONNX, "version": "3", "state": "LOADING"}]
    assert prune_versions(repo / ONNX, keep=1) == [2]


def test_pruning_removes_nothing_when_a_server_cannot_be_asked(fake_triton, monkeypatch):
    repo, _ = fake_triton
    monkeypatch.setattr(served, "loaded_versions", lambda url, model: None)  # not answering
    assert prune_versions(repo / ONNX, keep=1) == []
    assert sorted(p.name for p in (repo / ONNX).iterdir() if p.name.isdigit()) == ["1", "2", "3"]


def test_command_line_options_are_read_in_both_forms():
    argv = ["tritonserver", "--model-repository=/a", "--model-repository", "/b", "--http-port", "9", "-x"]
    assert served._options(argv) == {"--model-repository": ["/a", "/b"], "--http-port": ["9"]}


def test_image_pipelines_running_a_broken_model_are_affected():
    models = [ONNX, f"{ONNX}_image", "resnext101_32x4d_torchscript_image", PRE]
    why = f"runs {ONNX}, whose backend process died"
    assert health.affected_pipelines(models, {ONNX: "died"}) == {f"{ONNX}_image": why}
    pipelines = {f"{ONNX}_image", "resnext101_32x4d_torchscript_image"}
    assert set(health.affected_pipelines(models, {PRE: "died"})) == pipelines
    assert health.affected_pipelines(models, {}) == {}
