"""The GPU harness (bench/gpu/) without a GPU: the carry's planning and size, its tools, the sweep's
commands, the report, and the CUDA path of the pytorch stand-in run on CPU tensors.

The CPU mode end to end, against a real Triton, is tests/integration/test_gpu_harness.py.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest

from resnext_triton.bench import gpu_carry, gpu_export, gpu_report, gpu_sweep, gpu_tools
from resnext_triton.bench.baselines import BaselineResult
from resnext_triton.bench.gpu_elf import ElfError, closure, needed_libraries
from resnext_triton.bench.perf import MeasureSettings, PerfRun
from resnext_triton.bench.perf_csv import PerfPoint

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(next(p for p in sys.path if p.endswith("site-packages")))
TRITON_BIN = SITE / "pytriton" / "tritonserver" / "bin" / "tritonserver"
WHEEL_LIBS = SITE / "nvidia_pytriton.libs"
PERF_ANALYZER = Path(sys.executable).parent / "perf_analyzer"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not installed (scripts/bootstrap.py installs it)")
    return path


# --- ELF and the carry's plan ------------------------------------------------------------------


def test_needed_libraries_read_from_the_real_binaries():
    server = needed_libraries(_need(TRITON_BIN).read_bytes())
    assert "libc.so.6" in server and any(n.startswith("libtritonserver-") for n in server)
    assert "libcudart.so.12" in needed_libraries(_need(PERF_ANALYZER).read_bytes())
    with pytest.raises(ElfError):
        needed_libraries(b"#!/bin/sh\necho not an ELF file\n")
    with pytest.raises(ElfError):
        needed_libraries(TRITON_BIN.read_bytes()[:200])  # the section table is cut off


def test_closure_follows_the_bundled_libraries_and_leaves_the_unused_ones():
    libs = {p.name: p for p in _need(WHEEL_LIBS).iterdir()}
    loaded = closure([str(TRITON_BIN)], lambda name: libs.get(name, Path(name)).read_bytes(), set(libs))
    assert any(n.startswith("libtritonserver-") for n in loaded)
    assert any(n.startswith("libicudata-") for n in loaded)  # through libxml2 <- libicuuc, two links away
    assert not any(n.startswith("libpython3-") for n in loaded)  # bundled, loaded by none of them


def test_wheel_pins_come_from_pyproject():
    pins = gpu_carry.wheel_requirements()
    assert pins == {"pytriton": "nvidia-pytriton==0.7.0", "client": "tritonclient==2.51.0",
                    "cudart": pins["cudart"]}
    assert pins["cudart"].startswith("nvidia-cuda-runtime-cu12==")


@pytest.fixture(scope="module")
def wheels() -> dict[str, Path]:
    """The three pinned wheels, from the harness's wheel folder or downloaded there (pip's cache first)."""
    from resnext_triton.weights import cache_dir

    try:
        return gpu_carry.fetch_wheels(gpu_carry.wheel_requirements(), cache_dir() / "wheels", echo=lambda s: None)
    except gpu_carry.CarryError as exc:
        pytest.skip(f"the wheels are unavailable (no network, not cached): {exc}")


def test_plan_carries_what_the_gpu_machine_lacks(wheels):
    plan = gpu_carry.plan_carry(wheels, python="3.12")
    names = {f.arcname for f in plan.files}
    server = "triton/pytriton/tritonserver"
    for needed in (f"{server}/bin/tritonserver", f"{server}/backends/python/libtriton_python.so",
                   f"{server}/backends/python/triton_python_backend_utils.py",
                   f"{server}/python_backend_stubs/3.12/triton_python_backend_stub",
                   "client/bin/perf_analyzer", "client/lib/libb64.so.0d", "client/lib/libcudart.so.12",
                   "python/tritonclient/grpc/model_config_pb2.py"):
        assert needed in names, needed
    assert not [n for n in names if "python_backend_stubs/3.11" in n or "libpython3-" in n or "__pycache__" in n]
    modes = {f.arcname: f.mode for f in plan.files}
    assert modes[f"{server}/bin/tritonserver"] & 0o111 and modes["client/bin/perf_analyzer"] & 0o111
    # every library tritonserver, the backend and the stub load is in the carry: no bundled one is missing
    libs = {Path(n).name for n in plan.names("triton/nvidia_pytriton.libs/")}
    assert len(libs) == 41 and plan.total_bytes > 100e6
    with pytest.raises(gpu_carry.CarryError, match="stubs for Python"):
        gpu_carry.plan_carry(wheels, python="3.7")


@pytest.mark.slow
def test_prepare_fits_one_device_call(wheels, tmp_path, capsys):
    """The real command at its defaults (Python 3.12 stub, xz -6): the carry plus the working tree < 64 MiB."""
    from resnext_triton.bench.gpu_prepare import main

    out = tmp_path / "carry"
    assert main(["--out", str(out), "--wheels", str(wheels["pytriton"].parent)]) == 0
    manifest = json.loads((out / gpu_carry.MANIFEST_NAME).read_text())
    archive = out / gpu_carry.ARCHIVE_NAME
    assert archive.stat().st_size == manifest["archive_bytes"] < gpu_carry.CARRY_LIMIT_BYTES
    tree = gpu_carry.travelling_bytes(ROOT)
    assert tree is not None and tree + archive.stat().st_size < gpu_carry.CARRY_LIMIT_BYTES
    printed = capsys.readouterr().out
    assert "MiB of 64 MiB" in printed and "its stub for Python 3.12" in printed
    # a second run with nothing changed keeps the archive as it is
    assert main(["--out", str(out), "--wheels", str(wheels["pytriton"].parent), "--no-download"]) == 0
    assert "unchanged, kept" in capsys.readouterr().out
    # the carried tritonclient is enough for the exporter's config writer (the GPU machine has no other)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", members=[m for m in tar.getmembers() if m.name.startswith("python/")],
                       filter="data")
    code = ("import tritonclient.grpc as g; from resnext_triton.spec import Format, ModelSpec; "
            "from resnext_triton.triton.config import ServingOptions, build_config, to_pbtxt; "
            "print(g.__file__); print(to_pbtxt(build_config(ModelSpec(), Format.TORCHSCRIPT, "
            "ServingOptions(fp16_input=True))))")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'unpacked' / 'python'}:{ROOT / 'src'}"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path / "unpacked") in proc.stdout and "TYPE_FP16" in proc.stdout and "KIND_GPU" in proc.stdout


# --- writing and unpacking a carry --------------------------------------------------------------


def _tiny_plan(tmp_path: Path, python: str) -> gpu_carry.CarryPlan:
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(5000))
    files = (gpu_carry.CarryFile("client/bin/tool", 5000, 0o755, source),)
    return gpu_carry.CarryPlan(files, python, ("fake.whl",))


def test_carry_round_trip_and_its_checks(tmp_path):
    plan = _tiny_plan(tmp_path, gpu_tools.python_version())
    carry = tmp_path / "carry"
    first = gpu_carry.write_carry(plan, carry, preset=0)
    assert not first.reused and gpu_carry.write_carry(plan, carry, preset=0).reused
    assert not gpu_carry.write_carry(plan, carry, preset=1).reused  # another preset is another carry
    root = gpu_tools.unpack_carry(carry, tmp_path / "work")
    unpacked = root / "client" / "bin" / "tool"
    assert unpacked.read_bytes() == (tmp_path / "payload.bin").read_bytes() and os.access(unpacked, os.X_OK)
    manifest = carry / gpu_carry.MANIFEST_NAME
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "python": "2.7"}))
    with pytest.raises(gpu_tools.ToolsError, match=r"prepare\.py --python"):
        gpu_tools.unpack_carry(carry, tmp_path / "work2")
    manifest.write_text(json.dumps(data))
    archive = carry / gpu_carry.ARCHIVE_NAME
    archive.write_bytes(archive.read_bytes()[:-10])
    with pytest.raises(gpu_tools.ToolsError, match="does not match"):
        gpu_tools.unpack_carry(carry, tmp_path / "work3")
    with pytest.raises(gpu_tools.ToolsError, match="no usable GPU carry"):
        gpu_tools.unpack_carry(tmp_path / "nowhere", tmp_path / "work4")


def test_check_tools_supplies_a_missing_library_from_the_bundled_copies(tmp_path):
    """perf_analyzer without the CUDA runtime wheel on its path: the bundled libcudart-<hash>.so.12 is linked in."""
    if shutil.which("ldd") is None:
        pytest.skip("no ldd on this host")
    tools = gpu_tools.local_tools() if TRITON_BIN.exists() and PERF_ANALYZER.exists() else None
    if tools is None:
        pytest.skip("needs the local Triton and perf_analyzer (scripts/bootstrap.py)")
    bare = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    tools = gpu_tools.HarnessTools(tools.install, tools.perf_analyzer, tools.server_env, bare, "test")
    from resnext_triton.triton.local.install import missing_libraries

    assert "libcudart.so.12" in missing_libraries(tools.perf_analyzer, bare)
    fixed = gpu_tools.check_tools(tools, tmp_path / "lib")
    assert any(f.startswith("libcudart.so.12 -> libcudart-") for f in fixed.fixes)
    assert missing_libraries(tools.perf_analyzer, fixed.perf_env) == []
    version = subprocess.run([str(tools.perf_analyzer), "--version"], env=fixed.perf_env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert version.returncode == 0 and "perf analyzer version 2.51" in (version.stdout + version.stderr).lower()


# --- the sweep ------------------------------------------------------------------------------------


def test_grid_caps_the_images_in_flight_and_keeps_one_point_per_batch():
    grid = gpu_sweep.Grid((1, 8, 64), (1, 4, 16, 64, 256), max_in_flight=1024)
    points = grid.points()
    assert points[:5] == [(1, 1), (1, 4), (1, 16), (1, 64), (1, 256)]
    assert (8, 256) not in points and (64, 16) in points and (64, 64) not in points
    assert gpu_sweep.Grid((512,), (4,), max_in_flight=100).points() == [(512, 4)]
    with pytest.raises(ValueError):
        gpu_sweep.Grid((), (1,))


def test_input_data_keeps_the_model_dtype(tmp_path):
    images = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float16)
    data = json.loads(gpu_sweep.write_input_data(images, "INPUT__0", tmp_path / "in.json").read_text())["data"]
    assert len(data) == 2 and data[0]["INPUT__0"]["shape"] == [3, 4, 4]
    raw = base64.b64decode(data[1]["INPUT__0"]["content"]["b64"])
    assert len(raw) == 3 * 4 * 4 * 2
    np.testing.assert_array_equal(np.frombuffer(raw, "<f2").reshape(3, 4, 4), images[1])
    with pytest.raises(ValueError):
        gpu_sweep.write_input_data(images.astype(np.uint8), "INPUT__0", tmp_path / "bad.json")


def test_perf_command_uses_system_shared_memory_big_enough_for_the_output(tmp_path):
    run = PerfRun("m", "grpc", "127.0.0.1:1", 64, 4)
    out = gpu_sweep.output_bytes(64, 1000, 2)
    cmd = gpu_sweep.shm_command(Path("pa"), run, MeasureSettings(), tmp_path / "x.csv", tmp_path / "in.json", out)
    assert cmd[cmd.index("--shared-memory") + 1] == "system"
    assert int(cmd[cmd.index("--output-shared-memory-size") + 1]) >= 64 * 1000 * 2 > 100 * 1024
    assert "--input-data" in cmd and "count_windows" in cmd


def test_sweep_past_its_deadline_measures_nothing_and_says_so(tmp_path):
    tools = gpu_tools.HarnessTools(types.SimpleNamespace(), Path("/nonexistent/perf_analyzer"), {}, {}, "test")
    points = gpu_sweep.sweep("m", "127.0.0.1:1", gpu_sweep.Grid((1, 2), (1,)), MeasureSettings(), tools=tools,
                             raw_dir=tmp_path, input_data=tmp_path / "in.json", output_elements=10, itemsize=4,
                             deadline=gpu_sweep.Deadline(5.0), echo=lambda s: None)
    assert [p.error for p in points] == ["skipped: the time budget ran out"] * 2
    assert not list(tmp_path.iterdir())


# --- the export step --------------------------------------------------------------------------------


def test_export_steps_are_valid_exporter_command_lines(tmp_path):
    from resnext_triton.exporters.cli import build_parser

    gpu = gpu_export.export_steps(tmp_path, gpu_export.ExportOptions(gpu=True, tensorrt=True))
    assert [s.name for s in gpu] == ["onnx,tensorrt", "torchscript"]  # TorchScript last: its configs stay
    cpu = gpu_export.export_steps(tmp_path, gpu_export.ExportOptions(gpu=False, onnx=False, instances=1))
    assert [s.name for s in cpu] == ["torchscript"]
    for step in (*gpu, *cpu):
        assert step.command[1] == str(ROOT / "export" / "export.py")
        parsed = build_parser().parse_args(step.command[2:])
        assert parsed.weights == "random" and parsed.out == tmp_path
    ts = build_parser().parse_args(gpu[1].command[2:])
    assert ts.device == "cuda" and ts.torchscript_fp16 and ts.channels_last and ts.gpu_instances == 2
    assert build_parser().parse_args(gpu[0].command[2:]).device == "cpu"  # ONNX Runtime there is a CPU build
    assert build_parser().parse_args(cpu[0].command[2:]).cpu_instances == 1


# --- the server's command line ----------------------------------------------------------------------


def test_server_command_flags_exist_in_this_tritonserver(tmp_path):
    from resnext_triton.bench.gpu_server import server_command

    tools = gpu_tools.HarnessTools(types.SimpleNamespace(binary=_need(TRITON_BIN)), Path("pa"), {}, {}, "test")
    env = {**os.environ, "LD_LIBRARY_PATH": str(WHEEL_LIBS)}
    helped = subprocess.run([str(TRITON_BIN), "--help"], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    text = helped.stdout + helped.stderr
    for gpu in (True, False):
        cmd = server_command(tools, tmp_path, ["m"], tmp_path, (1, 2, 3), gpu=gpu, token="t")
        flags = {arg.split("=", 1)[0] for arg in cmd[1:]}
        assert flags and all(flag in text for flag in flags), sorted(f for f in flags if f not in text)
        assert ("--model-config-name=cpu" in cmd) is not gpu
        assert any("shm-default-byte-size" in arg for arg in cmd) is gpu


# --- the report ---------------------------------------------------------------------------------------


def _points() -> list[PerfPoint]:
    common = {"model": "resnext101_32x4d_torchscript", "protocol": "grpc", "config": "default"}
    return [PerfPoint(batch=1, concurrency=1, throughput=100.0, p50_ms=9.0, p95_ms=10.0, **common),
            PerfPoint(batch=1, concurrency=64, throughput=900.0, p50_ms=60.0, p95_ms=70.0, **common),
            PerfPoint(batch=8, concurrency=4, throughput=1000.0, p50_ms=30.0, p95_ms=32.0, **common),
            PerfPoint(batch=8, concurrency=64, error="skipped: the time budget ran out", stable=False, **common)]


def _baselines() -> list[BaselineResult]:
    host = "TorchScript FP16 channels_last in-process (input from host memory)"
    return [BaselineResult(host, 1, 100, 0.5, [5.0]), BaselineResult(host, 8, 800, 0.8, [8.0]),
            BaselineResult("TorchScript FP16 channels_last in-process (input on the GPU)", 8, 800, 0.4, [4.0])]


def test_ratios_compare_served_with_in_process_from_host_memory():
    rows = gpu_report.ratios(_points(), _baselines())
    by = {r.batch: r for r in rows}
    assert by[1].value == pytest.approx(900.0 / 200.0) and by[8].value == pytest.approx(1000.0 / 1000.0)
    assert by[None].served == 1000.0 and by[None].inprocess == pytest.approx(1000.0)
    assert "meets" in gpu_report.ratio_table(rows)
    assert "below the goal" in gpu_report.served_goal(_points(), "NVIDIA H100 80GB HBM3")
    assert "goal is for an H100" in gpu_report.served_goal(_points(), "CPU x")


def test_report_is_a_few_flat_files(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.csv").write_text("x")
    out = tmp_path / "out"
    files = gpu_report.write_report(out, context={"device": "NVIDIA H100 80GB HBM3", "mode": "cuda"},
                                    exports=["torchscript ok"], checks=["served vs in-process: ok"],
                                    points=_points(), baselines=_baselines(), raw=[raw, tmp_path / "missing.log"])
    assert len(files) <= 7 and all(f.parent == out for f in files)
    rows = list(csv.DictReader((out / gpu_report.CSV_FILE).read_text().splitlines()))
    assert [r["kind"] for r in rows].count("served") == 4 and [r["kind"] for r in rows].count("in-process") == 3
    assert rows[3]["error"].startswith("skipped")
    summary = (out / gpu_report.SUMMARY_FILE).read_text()
    for text in ("1312 img/s", "1746 img/s", "served vs in-process: ok", "## Served / in-process"):
        assert text in summary
    assert (out / gpu_report.PLOT_FILE).stat().st_size > 1000
    with tarfile.open(out / gpu_report.RAW_FILE) as tar:
        assert tar.getnames() == ["raw", "raw/a.csv"]


def test_run_without_a_gpu_fails_with_a_report(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    from resnext_triton.bench.gpu_run import main

    assert main(["--device", "cuda", "--out", str(tmp_path)]) == 1
    summary = (tmp_path / gpu_report.SUMMARY_FILE).read_text()
    assert "no CUDA device" in summary and "--device cpu" in summary
    assert main(["--device", "cpu", "-b", "128", "--out", str(tmp_path)]) == 2  # above --max-batch-size


# --- the pytorch stand-in's GPU path, on CPU tensors ------------------------------------------------

FEATURES, CLASSES = (3, 4, 4), 5


class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return np.asarray(self._array)

    def __dlpack__(self, *args, **kwargs):
        return self._array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()

    @classmethod
    def from_dlpack(cls, name, obj):
        import torch

        return cls(name, torch.from_dlpack(obj).numpy().copy())


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self.output_tensors, self.error = output_tensors or [], error


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """The pytorch stand-in imported with a fake triton_python_backend_utils, and a tiny TorchScript file."""
    import torch

    logged: list[str] = []
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor, pb.InferenceResponse, pb.TritonError = _Tensor, _Response, str
    pb.TritonModelException = type("TritonModelException", (Exception,), {})
    pb.get_input_tensor_by_name = lambda request, name: _Tensor(name, request.inputs[name])
    pb.triton_string_to_numpy = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}.get
    pb.Logger = types.SimpleNamespace(log_info=logged.append, log_warn=logged.append)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.delitem(sys.modules, "_resnext_standin", raising=False)
    backends = ROOT / "src" / "resnext_triton" / "triton" / "backends"
    monkeypatch.syspath_prepend(str(backends))
    spec = importlib.util.spec_from_file_location("gpu_standin_pytorch", backends / "pytorch" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, CLASSES)).eval())
    (tmp_path / "1").mkdir()
    net.save(str(tmp_path / "1" / "model.pt"))
    yield types.SimpleNamespace(module=module, pb=pb, dir=tmp_path, net=net, logged=logged)
    sys.modules.pop("_resnext_standin", None)


def _args(model_dir: Path, kind: str, device_id: int = 0) -> dict:
    cfg = {"name": "tiny", "backend": "pytorch", "max_batch_size": 8,
           "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": list(FEATURES)}],
           "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [CLASSES]}],
           "instance_group": [{"count": 1, "kind": f"KIND_{kind}"}]}
    return {"model_config": json.dumps(cfg), "model_repository": str(model_dir), "model_version": "1",
            "model_name": "tiny", "model_instance_kind": kind, "model_instance_device_id": str(device_id)}


def test_gpu_instance_batches_torch_tensors_into_one_call_on_its_device(standin, monkeypatch):
    import torch

    monkeypatch.setattr(standin.module.TritonPythonModel, "gpu_device_type", "cpu")
    model = standin.module.TritonPythonModel()
    model.initialize(_args(standin.dir, "GPU", device_id=0))
    assert model.on_gpu and model.device == torch.device("cpu", 0)
    assert any("on cuda:0" in line for line in standin.logged)
    seen = []

    def module(x):
        seen.append((x.shape[0], x.device.type, isinstance(x, torch.Tensor)))
        return standin.net(x)

    model.module = module
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((n, *FEATURES)).astype(np.float32) for n in (2, 1, 3)]
    requests = [types.SimpleNamespace(inputs={"INPUT__0": torch.from_numpy(x)}, requested_output_names=list)
                for x in inputs]
    bad = types.SimpleNamespace(inputs={"INPUT__0": torch.zeros((1, *FEATURES), dtype=torch.float64)},
                                requested_output_names=list)
    responses = model.execute([*requests, bad])
    assert seen == [(6, "cpu", True)]  # ONE module call for the three good requests
    for x, response in zip(inputs, responses[:3], strict=True):
        (tensor,) = response.output_tensors
        expected = standin.net(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(tensor.as_numpy(), expected, atol=1e-6)
    assert "dtype float64" in responses[3].error


def test_gpu_instance_without_cuda_fails_to_load(standin):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    with pytest.raises(standin.pb.TritonModelException, match="sees no CUDA device"):
        standin.module.TritonPythonModel().initialize(_args(standin.dir, "GPU"))


def test_cpu_instance_keeps_numpy(standin):
    model = standin.module.TritonPythonModel()
    model.initialize(_args(standin.dir, "CPU"))
    assert not model.on_gpu and any("on CPU" in line for line in standin.logged)
    x = np.ones((2, *FEATURES), np.float32)
    assert isinstance(model.to_array(_Tensor("INPUT__0", x)), np.ndarray)
    (response,) = model.execute([types.SimpleNamespace(inputs={"INPUT__0": x}, requested_output_names=list)])
    assert response.output_tensors[0].as_numpy().shape == (2, CLASSES)


def test_output_regions_fit_the_largest_output(tmp_path):
    config = tmp_path / "config.pbtxt"
    config.write_text('# header\nname: "m"\nmax_batch_size: 64\noutput { name: "OUTPUT__0" data_type: TYPE_FP16 '
                      'dims: 1000 }\noutput { name: "FEATURES__1" data_type: TYPE_FP16 dims: 2048 }\n')
    assert gpu_sweep.largest_output(config) == 2048
    assert gpu_sweep.output_bytes(64, 2048, 2) >= 64 * 2048 * 2


def test_every_documented_harness_command_parses():
    """The commands in bench/gpu/README.md, BENCHMARKS.md and README.md are valid for the two parsers."""
    import re
    import shlex

    from resnext_triton.bench.gpu_prepare import build_parser as prepare_parser
    from resnext_triton.bench.gpu_run import build_parser as run_parser

    parsers = {"prepare": prepare_parser(), "run": run_parser()}
    found = 0
    for doc in ("bench/gpu/README.md", "BENCHMARKS.md", "README.md"):
        text = (ROOT / doc).read_text()
        for command, args in re.findall(r"python bench/gpu/(prepare|run)\.py([^`#\n]*)", text):
            parsers[command].parse_args(shlex.split(args))
            found += 1
    assert found >= 7
