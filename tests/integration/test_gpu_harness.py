"""The GPU harness's CPU mode end to end: bench/gpu/run.py --device cpu against a real Triton.

Every step the GPU run takes runs here on the CPU with tiny sizes: the export (the project's
exporter), tritonserver with the stand-ins, the served-vs-in-process check, perf_analyzer over
system shared memory, the in-process timing and the results directory. Once with this
environment's Triton and perf_analyzer, once with a carry that bench/gpu/prepare.py wrote for this
Python (its tritonserver, libraries, perf_analyzer and libb64/libcudart are the ones a GPU machine
gets).
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from resnext_triton.bench import gpu_carry, gpu_report
from resnext_triton.bench.gpu_tools import python_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--device", "cpu", "-b", "1,2", "-c", "1,2", "--window-images", "4", "--max-trials", "3",
        "--baseline-images", "4", "--budget-s", "480", "--reserve-s", "30"]
SKIPPED = "skipped: the time budget ran out"


def _run(args: list[str], timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "run.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def _check_results(out: Path, proc: subprocess.CompletedProcess, *, onnx: bool) -> list[dict]:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    names = {p.name for p in out.iterdir()}
    assert names == {gpu_report.CSV_FILE, gpu_report.SUMMARY_FILE, gpu_report.PLOT_FILE, gpu_report.JSON_FILE,
                     gpu_report.LOG_FILE, gpu_report.RAW_FILE}  # flat, and few: a device call returns 8 files
    rows = list(csv.DictReader((out / gpu_report.CSV_FILE).read_text().splitlines()))
    served = [r for r in rows if r["kind"] == "served"]
    assert [(r["batch"], r["concurrency"]) for r in served] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    # on a loaded host the budget may cut the sweep short; whatever ran was measured
    measured = [r for r in served if r["error"] != SKIPPED]
    assert measured and all(float(r["img_s"]) > 0 and not r["error"] for r in measured), served
    inprocess = [r for r in rows if r["kind"] == "in-process"]
    assert [r["batch"] for r in inprocess] == ["1", "2"] and all(float(r["img_s"]) > 0 for r in inprocess)
    summary = (out / gpu_report.SUMMARY_FILE).read_text()
    assert "served vs in-process on 6 photos: top-1 6/6" in summary and ": ok" in summary
    lines = summary.splitlines()
    for fmt in ("onnx", "torchscript"):  # the exporter's line per format: validated on the photos, published
        exported = [line for line in lines if line.startswith(f"{fmt} ")]
        assert bool(exported) is (onnx or fmt == "torchscript"), lines
        assert all("top-1 6/6" in line and line.endswith(" ok") for line in exported), exported
    with tarfile.open(out / gpu_report.RAW_FILE) as tar:
        logs = [n for n in tar.getnames() if n.endswith(".log") and "_grpc_b" in n]
        assert len(logs) == len(measured) and "triton.log" in tar.getnames()
        text = tar.extractfile(next(m for m in tar.getmembers() if m.name == logs[0])).read().decode()
        assert "--shared-memory system" in text
    return rows


def test_cpu_mode_with_this_environments_triton(tmp_path):
    out = tmp_path / "results"
    proc = _run([*TINY, "--no-onnx", "--out", str(out)])
    _check_results(out, proc, onnx=False)
    assert "tools: this environment" in proc.stdout


@pytest.fixture(scope="module")
def carry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A carry for this Python (so that its stub runs here), at a fast preset (a bigger archive than -6)."""
    from resnext_triton.bench.gpu_prepare import main
    from resnext_triton.weights import cache_dir

    wheels = cache_dir() / "wheels"
    try:
        gpu_carry.fetch_wheels(gpu_carry.wheel_requirements(), wheels, echo=lambda s: None)
    except gpu_carry.CarryError as exc:
        pytest.skip(f"the wheels are unavailable (no network, not cached): {exc}")
    out = tmp_path_factory.mktemp("gpu-carry")
    assert main(["--out", str(out), "--wheels", str(wheels), "--python", python_version(), "--xz-preset", "1"]) == 0
    assert (out / gpu_carry.ARCHIVE_NAME).stat().st_size < gpu_carry.CARRY_LIMIT_BYTES
    return out


def test_cpu_mode_with_the_carried_triton_and_perf_analyzer(carry, tmp_path):
    out = tmp_path / "results"
    proc = _run([*TINY, "--carry", str(carry), "--out", str(out)])
    _check_results(out, proc, onnx=True)
    assert f"tools: carry {carry}" in proc.stdout
    json_text = (out / gpu_report.JSON_FILE).read_text()
    assert "client/bin/perf_analyzer" in json_text or "carry" in json_text


GPU_PATH_MODEL = '''from pytorch_standin import TritonPythonModel as PytorchStandin


class TritonPythonModel(PytorchStandin):
    gpu_device_type = "cpu"  # the CUDA code path on CPU tensors

    def initialize(self, args):
        super().initialize({**args, "model_instance_kind": "GPU"})
'''


def test_the_cuda_path_of_the_pytorch_standin_serves_in_the_real_triton(tmp_path):
    """The stand-in's GPU path (DLPack from Triton's own tensors, staging, DLPack out) inside the real stub."""
    import numpy as np
    import torch
    import tritonclient.grpc as grpcclient

    from resnext_triton.bench.gpu_server import serve
    from resnext_triton.bench.gpu_tools import ToolsError, check_tools, local_tools
    from resnext_triton.triton.local.install import STANDIN_BASE, prepare_backends

    try:
        tools = check_tools(local_tools(), tmp_path / "lib")
    except ToolsError as exc:
        pytest.skip(f"no local Triton: {exc}")
    backends = prepare_backends(tmp_path / "triton_state", tools.install)
    gpu_path = backends / "pytorch_gpupath"
    gpu_path.mkdir()
    (gpu_path / "pytorch_standin.py").write_bytes((backends / "pytorch" / "model.py").read_bytes())
    (gpu_path / STANDIN_BASE).write_bytes((backends / "pytorch" / STANDIN_BASE).read_bytes())
    (gpu_path / "model.py").write_text(GPU_PATH_MODEL)
    model_dir = tmp_path / "repo" / "tiny"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "configs").mkdir()
    torch.manual_seed(0)
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5)).eval())
    net.save(str(model_dir / "1" / "model.pt"))
    config = ('name: "tiny" backend: "pytorch_gpupath" max_batch_size: 8 default_model_filename: "model.pt" '
              'input { name: "INPUT__0" data_type: TYPE_FP32 dims: [3, 4, 4] } '
              'output { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [5] } '
              'instance_group { count: 1 kind: KIND_CPU } dynamic_batching { max_queue_delay_microseconds: 20000 }\n')
    (model_dir / "configs" / "cpu.pbtxt").write_text(config)
    (model_dir / "config.pbtxt").write_text(config)
    with serve(tools, tmp_path / "repo", ["tiny"], tmp_path, gpu=False, timeout_s=120) as server:
        client = grpcclient.InferenceServerClient(server.grpc)
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal((n, 3, 4, 4)).astype(np.float32) for n in (1, 3, 2)]
        results: list = [None] * len(inputs)
        for i, x in enumerate(inputs):  # in flight together: the dynamic batcher may hand them over as one batch
            request = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
            request.set_data_from_numpy(x)
            client.async_infer("tiny", [request],
                               callback=lambda result, error, i=i: results.__setitem__(i, (result, error)))
        deadline = time.monotonic() + 60
        while any(r is None for r in results) and time.monotonic() < deadline:
            time.sleep(0.05)
        client.close()
        log = server.log_file.read_text()
    assert "tiny: torch" in log and "on cuda:0" in log, log[-2000:]  # the GPU path was taken
    for x, (result, error) in zip(inputs, results, strict=True):
        assert error is None, error
        np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), net(torch.from_numpy(x)).detach().numpy(),
                                   atol=1e-5)
