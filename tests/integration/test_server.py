"""The real local Triton: readiness, metadata, config, HTTP/gRPC inference, classification, batching, security."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from resnext_triton.spec import Format
from resnext_triton.triton import local as srv
from resnext_triton.triton.config import parse_pbtxt

pytestmark = pytest.mark.integration

FORMATS = [Format.ONNX, Format.TORCHSCRIPT]
PROTOCOLS = ["http", "grpc"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def images(photos) -> np.ndarray:
    """Four real photos, preprocessed as the model was trained (float32, 4x3x224x224)."""
    from resnext_triton.preprocess import preprocess_path

    return np.stack([preprocess_path(p) for p in photos[:4]]).astype(np.float32)


@pytest.fixture(scope="module")
def reference(triton_server, images) -> dict[Format, np.ndarray]:
    """Logits of the served artifacts run in this process: ONNX Runtime and TorchScript."""
    import onnxruntime as ort
    import torch

    onnx_path = triton_server.repo / triton_server.models[Format.ONNX] / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(["OUTPUT__0"], {"INPUT__0": images})
    module = torch.jit.load(str(triton_server.repo / triton_server.models[Format.TORCHSCRIPT] / "1" / "model.pt"))
    with torch.inference_mode():
        ts_out = module(torch.from_numpy(images))[0].numpy()  # (logits, features)
    return {Format.ONNX: onnx_out, Format.TORCHSCRIPT: ts_out}


def infer(triton_server, protocol: str, model: str, batch: np.ndarray, class_count: int = 0) -> np.ndarray:
    if protocol == "http":
        client = httpclient.InferenceServerClient(triton_server.http_address)
        inp = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=True)
        out = httpclient.InferRequestedOutput("OUTPUT__0", binary_data=True, class_count=class_count)
    else:
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        inp = grpcclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        out = grpcclient.InferRequestedOutput("OUTPUT__0", class_count=class_count)
    try:
        return client.infer(model, [inp], outputs=[out]).as_numpy("OUTPUT__0")
    finally:
        client.close()


def test_server_is_live_and_ready_on_both_protocols(triton_server):
    http = httpclient.InferenceServerClient(triton_server.http_address)
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    for model in triton_server.models.values():
        assert http.is_model_ready(model) and grpc.is_model_ready(model)
    metadata = http.get_server_metadata()
    assert metadata["version"] == triton_server.triton.state.version
    assert {"classification", "model_repository", "statistics"} <= set(metadata["extensions"])
    assert triton_server.http_url.startswith("http://127.0.0.1:") and triton_server.grpc_url.startswith("127.0.0.1:")


def test_index_lists_the_loaded_cpu_models(triton_server):
    client = httpclient.InferenceServerClient(triton_server.http_address)
    index = client.get_model_repository_index()
    assert {m["name"]: m["state"] for m in index} == {name: "READY" for name in triton_server.served}
    assert set(triton_server.models.values()) < set(triton_server.served)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_model_metadata_on_both_protocols(triton_server, fmt):
    name = triton_server.models[fmt]
    http = httpclient.InferenceServerClient(triton_server.http_address).get_model_metadata(name)
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url).get_model_metadata(name, as_json=True)
    assert http["name"] == grpc["name"] == name
    assert http["versions"] == grpc["versions"] == ["1"]
    assert http["inputs"] == [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert http["outputs"] == [
        {"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 1000]},
        {"name": "FEATURES__1", "datatype": "FP32", "shape": [-1, 2048]},
    ]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in grpc["inputs"]] == [
        ("INPUT__0", "FP32", [-1, 3, 224, 224])
    ]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_served_config_is_the_cpu_variant(triton_server, fmt):
    name = triton_server.models[fmt]
    served = grpcclient.InferenceServerClient(triton_server.grpc_url).get_model_config(name, as_json=True)["config"]
    expected = parse_pbtxt((triton_server.repo / name / "configs" / "cpu.pbtxt").read_text())
    assert served["backend"] == expected.backend == {"onnx": "onnxruntime", "torchscript": "pytorch"}[fmt.value]
    assert served["runtime"] == "model.py"  # the CPU stand-in answered for the native backend
    assert int(served["max_batch_size"]) == expected.max_batch_size
    assert [(g["kind"], int(g["count"])) for g in served["instance_group"]] == [("KIND_CPU", 1)]
    assert served["default_model_filename"] == fmt.filename
    assert int(served["dynamic_batching"]["max_queue_delay_microseconds"]) == (
        expected.dynamic_batching.max_queue_delay_microseconds
    )
    assert served["output"][0]["label_filename"] == "labels.txt"
    assert [int(d) for d in served["input"][0]["dims"]] == list(expected.input[0].dims)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_inference_equals_the_in_process_runtime(triton_server, images, reference, fmt, protocol):
    out = infer(triton_server, protocol, triton_server.models[fmt], images)
    assert out.shape == (len(images), 1000) and out.dtype == np.float32
    diff = float(np.abs(out - reference[fmt]).max())
    assert diff <= ATOL, f"{fmt} over {protocol}: max|diff| {diff:.2e} > {ATOL}"


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_triton_agrees_with_the_eager_model(triton_server, exported_repo, images, fmt):
    import torch

    with torch.inference_mode():
        eager = exported_repo.eager(torch.from_numpy(images)).numpy()
    out = infer(triton_server, "grpc", triton_server.models[fmt], images)
    assert float(np.abs(out - eager).max()) <= 1e-3  # the exporter's FP32 bound
    assert (out.argmax(1) == eager.argmax(1)).all()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_classification_extension_returns_top5_labels(triton_server, images, reference, fmt, protocol):
    labels = triton_server.spec.labels()
    out = infer(triton_server, protocol, triton_server.models[fmt], images[:2], class_count=5)
    assert out.shape == (2, 5)
    for row, ref in zip(out, reference[fmt][:2], strict=True):
        entries = [entry.decode().split(":", 2) for entry in row]
        values = np.array([float(v) for v, _, _ in entries])
        indices = [int(i) for _, i, _ in entries]
        assert [label for _, _, label in entries] == [labels[i] for i in indices]
        np.testing.assert_allclose(values, np.sort(ref)[::-1][:5], atol=ATOL)  # the five largest, in order
        np.testing.assert_allclose(values, ref[indices], atol=ATOL)  # at the indices Triton named
        assert len(set(indices)) == 5


def _stats(client: httpclient.InferenceServerClient, model: str) -> dict:
    (stats,) = client.get_inference_statistics(model)["model_stats"]
    return stats


def test_concurrent_requests_are_batched(triton_server, images, reference):
    model = triton_server.models[Format.ONNX]
    client = httpclient.InferenceServerClient(triton_server.http_address, concurrency=8)
    before = _stats(client, model)
    order = [i % len(images) for i in range(8)]
    pending = []
    for i in order:
        inp = httpclient.InferInput("INPUT__0", [1, 3, 224, 224], "FP32")
        inp.set_data_from_numpy(images[i : i + 1], binary_data=True)
        pending.append(client.async_infer(model, [inp]))
    results = [p.get_result(timeout=300).as_numpy("OUTPUT__0") for p in pending]
    after = _stats(client, model)
    client.close()
    for i, out in zip(order, results, strict=True):
        assert float(np.abs(out[0] - reference[Format.ONNX][i]).max()) <= ATOL  # each got its own answer
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 8
    assert executions < inferences, f"8 concurrent requests took {executions} executions: not batched"
    assert max(int(b["batch_size"]) for b in after["batch_stats"]) > 1


def test_no_client_can_load_or_unload_models_and_no_secret_is_on_the_command_line(triton_server):
    """Poll mode over the serving view: the model set follows the repository, never a request."""
    name = triton_server.models[Format.ONNX]
    http = httpclient.InferenceServerClient(triton_server.http_address)
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    with pytest.raises(InferenceServerException, match="not allowed if polling is enabled"):
        http.unload_model(name)
    with pytest.raises(InferenceServerException, match="not allowed if polling is enabled"):
        grpc.unload_model(name)
    with pytest.raises(InferenceServerException, match="not allowed if polling is enabled"):
        http.load_model("resnext101_32x4d_tensorrt_fp16")
    # the log file cannot be moved over the network (Triton 2.51 refuses it), so the logging API cannot write files
    with pytest.raises(InferenceServerException, match="log file location can not be updated"):
        http.update_log_settings({"log_file": str(triton_server.repo / "pwned.log")})
    assert http.is_model_ready(name)  # still loaded
    argv = Path(f"/proc/{triton_server.triton.state.pid}/cmdline").read_bytes().decode().split("\0")
    assert "--model-control-mode=poll" in argv
    assert not [a for a in argv if "token" in a or "restricted" in a]
    view = Path(triton_server.config.state_dir) / "serving"
    assert f"--model-repository={view}" in argv
    assert sorted(p.name for p in view.iterdir()) == sorted(triton_server.served)


def test_wrong_input_is_rejected(triton_server):
    client = httpclient.InferenceServerClient(triton_server.http_address)
    inp = httpclient.InferInput("INPUT__0", [1, 3, 224, 224], "FP64")
    inp.set_data_from_numpy(np.zeros((1, 3, 224, 224), np.float64))
    with pytest.raises(InferenceServerException, match=r"(?i)datatype|FP64"):
        client.infer(triton_server.models[Format.ONNX], [inp])


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"{", 500, "failed to parse the request JSON buffer"),
        (b'{"outputs":[]}', 500, "Unable to parse 'inputs'"),
        (b'{"inputs":[{"name":"INPUT__0","shape":[1,3,224,224],"datatype":"FP32","data":[0]}]}', 500,
         "Shape does not match true shape of 'data' field"),
        (b'{"inputs":[{"name":"INPUT__0","shape":[1,3,224,224],"datatype":"BOGUS","data":[0]}]}', 400,
         "invalid datatype for input INPUT__0"),
    ],
    ids=["unparsable", "no-inputs", "data-shorter-than-shape", "unknown-datatype"],
)  # fmt: skip
def test_malformed_json_status_codes_are_tritons_as_documented(triton_server, body, code, message):
    """README, Faults and recovery: Triton 2.51 answers some malformed requests with 500, not 400."""
    url = f"{triton_server.http_url}/v2/models/{triton_server.models[Format.ONNX]}/infer"
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30)
    assert answered.value.code == code and message in answered.value.read().decode()


def test_metrics_endpoint_counts_inferences(triton_server):
    text = urllib.request.urlopen(triton_server.metrics_url, timeout=10).read().decode()
    assert f'nv_inference_request_success{{model="{triton_server.models[Format.ONNX]}",version="1"}}' in text


def test_second_start_reuses_the_running_server(triton_server):
    result = srv.start(triton_server.config)
    assert result.already_running
    assert result.state.pid == triton_server.triton.state.pid
    assert result.model_states == {name: "READY" for name in triton_server.served}
    status = srv.status(triton_server.config.state_dir)
    assert status.running and status.ready and status.state is not None
    assert status.state.http_url == triton_server.http_url
    assert status.problems == {} and status.state.restarts == 0
    assert srv.server_id(triton_server.http_url) == status.state.server_id  # the one this state started


def test_a_model_that_fails_to_load_is_a_clear_error(triton_server, tmp_path):
    """A corrupt model.onnx: start() raises ModelLoadError naming the model, and leaves no server behind."""
    name = triton_server.models[Format.ONNX]
    model_dir = tmp_path / "repo" / name
    shutil.copytree(triton_server.repo / name, model_dir, ignore=shutil.ignore_patterns("[0-9]*"))
    (model_dir / "1").mkdir()
    (model_dir / "1" / "model.onnx").write_bytes(b"this is not an ONNX model")
    config = srv.ServerConfig(
        repo=tmp_path / "repo", state_dir=tmp_path / "state", http_port=0, grpc_port=0, metrics_port=0, timeout_s=300
    )
    with pytest.raises(srv.ModelLoadError) as failed:
        srv.start(config)
    assert list(failed.value.failures) == [name]
    assert f"model failed to load: {name}" in str(failed.value)
    assert "cannot load" in failed.value.failures[name]
    assert "failed to load" in failed.value.log_tail
    assert srv.running_state(tmp_path / "state") is None
    assert not srv.status(tmp_path / "state").running


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_start_timeout_is_an_error_and_stops_the_server(triton_server, tmp_path):
    state_dir = tmp_path / "state"
    config = srv.ServerConfig(
        repo=triton_server.repo, state_dir=state_dir, http_port=0, grpc_port=0, metrics_port=0, timeout_s=0.5,
        models=(triton_server.models[Format.ONNX],),
    )  # fmt: skip
    with pytest.raises(srv.StartTimeoutError, match=r"not ready after 0 s \(raise --timeout"), srv.LocalTriton(config):
        pytest.fail("a server that loads a 170 MB model cannot be ready within 0.5 s")
    assert srv.running_state(state_dir) is None
    assert _processes_mentioning(str(state_dir)) == []  # neither supervisor, tritonserver nor its stubs
