"""The CPU stand-in backends (backends/*/model.py on their shared base) outside Triton, with a fake
triton_python_backend_utils.

Small models keep these fast; the real thing runs in tests/integration/test_server.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from resnext_triton.triton.local.install import STANDIN_BASE, install_standins

BASE = STANDIN_BASE.removesuffix(".py")  # the module name model.py imports the base by
BACKENDS = resources.files("resnext_triton.triton").joinpath("backends")
FEATURES = (3, 4, 4)
CLASSES = 5


class FakeTensor:
    """The parts of pb_utils.Tensor the stand-ins use (both the numpy and the DLPack path)."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def __dlpack__(self, *args, **kwargs):
        return self._array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()

    @classmethod
    def from_dlpack(cls, name: str, obj) -> FakeTensor:
        return cls(name, np.from_dlpack(obj).copy())


class FakeResponse:
    def __init__(self, output_tensors=None, error=None) -> None:
        self.output_tensors, self.error = output_tensors or [], error

    def output(self, name: str) -> np.ndarray:
        assert self.error is None, self.error
        (tensor,) = [t for t in self.output_tensors if t.name() == name]
        return tensor.as_numpy()


class FakeRequest:
    def __init__(self, inputs: dict[str, np.ndarray], requested: list[str] | None = None) -> None:
        self.inputs, self.requested = inputs, requested or []

    def requested_output_names(self) -> list[str]:
        return self.requested


class TritonModelException(Exception):
    pass


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor
    module.InferenceResponse = FakeResponse
    module.TritonError = lambda message: message
    module.TritonModelException = TritonModelException
    module.get_input_tensor_by_name = lambda request, name: (
        FakeTensor(name, request.inputs[name]) if name in request.inputs else None
    )
    module.triton_string_to_numpy = lambda s: {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}[s]
    module.Logger = types.SimpleNamespace(log_info=lambda msg: None, log_warn=lambda msg: None)
    return module


@pytest.fixture(autouse=True)
def standin_imports(monkeypatch: pytest.MonkeyPatch):
    """The fake triton_python_backend_utils; each test imports the base afresh and leaves none behind."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    sys.modules.pop(BASE, None)
    yield
    sys.modules.pop(BASE, None)


def load_backend(name: str, monkeypatch: pytest.MonkeyPatch, backends: Path | None = None) -> types.ModuleType:
    """Import <backends>/<name>/model.py as Triton's stub would: its directory first on sys.path.

    ``backends`` is a directory the launcher prepared (the base file beside each model.py); by
    default the package's own backends/ folder, where the one base file sits above the stand-ins.
    """
    if backends is None:
        backends = Path(str(BACKENDS))
        monkeypatch.syspath_prepend(str(backends))
    monkeypatch.syspath_prepend(str(backends / name))
    spec = importlib.util.spec_from_file_location(f"standin_{name}", str(backends / name / "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_of(backend: types.ModuleType) -> types.ModuleType:
    """The shared base module a loaded stand-in imported."""
    return sys.modules[backend.TritonPythonModel.__mro__[1].__module__]


def config(backend: str, filename: str, *, dtype: str = "TYPE_FP32", instances: int = 1, **extra) -> dict:
    return {
        "name": f"tiny_{backend}",
        "backend": backend,
        "max_batch_size": 8,
        "default_model_filename": filename,
        "input": [{"name": "INPUT__0", "data_type": dtype, "dims": list(FEATURES)}],
        "output": [{"name": "OUTPUT__0", "data_type": dtype, "dims": [CLASSES]}],
        "instance_group": [{"count": instances, "kind": "KIND_CPU"}],
        **extra,
    }


def args_for(model_dir: Path, cfg: dict) -> dict:
    return {
        "model_config": json.dumps(cfg),
        "model_repository": str(model_dir),
        "model_version": "1",
        "model_name": cfg["name"],
    }


@pytest.fixture(scope="module")
def weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((int(np.prod(FEATURES)), CLASSES)).astype(np.float32), rng.standard_normal(
        CLASSES
    ).astype(np.float32)


@pytest.fixture
def onnx_dir(tmp_path: Path, weights) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = weights
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["INPUT__0"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["OUTPUT__0"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("INPUT__0", TensorProto.FLOAT, ["N", *FEATURES])],
        [helper.make_tensor_value_info("OUTPUT__0", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "1").mkdir()
    onnx.save(model, str(tmp_path / "1" / "model.onnx"))
    return tmp_path


def _torch_module(weights, dtype):
    import torch

    w, b = weights
    linear = torch.nn.Linear(w.shape[0], CLASSES)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w.T))
        linear.bias.copy_(torch.from_numpy(b))
    module = torch.nn.Sequential(torch.nn.Flatten(), linear).to(dtype).eval()
    return torch.jit.script(module)


@pytest.fixture
def torchscript_dir(tmp_path: Path, weights) -> Path:
    import torch

    (tmp_path / "1").mkdir()
    _torch_module(weights, torch.float32).save(str(tmp_path / "1" / "model.pt"))
    return tmp_path


def reference(x: np.ndarray, weights) -> np.ndarray:
    w, b = weights
    return x.reshape(len(x), -1).astype(np.float64) @ w + b


def batches(*sizes: int, dtype=np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(sum(sizes))
    return [rng.standard_normal((n, *FEATURES)).astype(dtype) for n in sizes]


class CountingCalls:
    """Wraps a callable (a session's run, a TorchScript module) and records each call's batch size."""

    def __init__(self, target, batch_of) -> None:
        self.target, self.batch_of, self.calls = target, batch_of, []

    def __call__(self, *args, **kwargs):
        self.calls.append(self.batch_of(*args, **kwargs))
        return self.target(*args, **kwargs)


@pytest.mark.parametrize("numpy2", [True, False], ids=["dlpack", "as_numpy"])
def test_onnxruntime_batches_all_requests_into_one_call(onnx_dir, weights, monkeypatch, numpy2):
    backend = load_backend("onnxruntime", monkeypatch)
    monkeypatch.setattr(base_of(backend), "NUMPY2", numpy2)
    model = backend.TritonPythonModel()
    model.initialize(args_for(onnx_dir, config("onnxruntime", "model.onnx")))
    counter = CountingCalls(model.session.run, lambda names, feed: feed["INPUT__0"].shape[0])
    model.session = types.SimpleNamespace(run=counter)
    inputs = batches(1, 3, 2)
    responses = model.execute([FakeRequest({"INPUT__0": x}) for x in inputs])
    assert counter.calls == [6]  # ONE session call for the three requests
    assert len(responses) == 3
    for x, response in zip(inputs, responses, strict=True):
        out = response.output("OUTPUT__0")
        assert out.shape == (len(x), CLASSES) and out.dtype == np.float32
        np.testing.assert_allclose(out, reference(x, weights), atol=1e-4)
    model.finalize()


def test_onnxruntime_bad_request_gets_its_own_error(onnx_dir, weights, monkeypatch):
    backend = load_backend("onnxruntime", monkeypatch)
    model = backend.TritonPythonModel()
    model.initialize(args_for(onnx_dir, config("onnxruntime", "model.onnx")))
    good, wrong_shape = batches(2)[0], np.zeros((1, 3, 5, 5), np.float32)
    responses = model.execute(
        [
            FakeRequest({"INPUT__0": good}),
            FakeRequest({"INPUT__0": wrong_shape}),
            FakeRequest({"INPUT__0": good.astype(np.float64)}),
            FakeRequest({}),
        ]
    )
    np.testing.assert_allclose(responses[0].output("OUTPUT__0"), reference(good, weights), atol=1e-4)
    assert "shape [1, 3, 5, 5]" in responses[1].error
    assert "dtype float64" in responses[2].error
    assert "missing input INPUT__0" in responses[3].error


def test_onnxruntime_missing_or_broken_file_fails_initialize(onnx_dir, tmp_path, monkeypatch):
    backend = load_backend("onnxruntime", monkeypatch)
    with pytest.raises(TritonModelException, match="model file not found"):
        backend.TritonPythonModel().initialize(args_for(tmp_path / "nowhere", config("onnxruntime", "model.onnx")))
    (onnx_dir / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(TritonModelException, match="cannot load"):
        backend.TritonPythonModel().initialize(args_for(onnx_dir, config("onnxruntime", "model.onnx")))


def test_onnxruntime_rejects_tensor_names_the_file_lacks(onnx_dir, monkeypatch):
    backend = load_backend("onnxruntime", monkeypatch)
    cfg = config("onnxruntime", "model.onnx")
    cfg["input"][0]["name"] = "images"
    with pytest.raises(TritonModelException, match="no tensor"):
        backend.TritonPythonModel().initialize(args_for(onnx_dir, cfg))


@pytest.mark.parametrize("numpy2", [True, False], ids=["dlpack", "as_numpy"])
def test_pytorch_batches_all_requests_into_one_call(torchscript_dir, weights, monkeypatch, numpy2):
    backend = load_backend("pytorch", monkeypatch)
    monkeypatch.setattr(base_of(backend), "NUMPY2", numpy2)
    model = backend.TritonPythonModel()
    model.initialize(args_for(torchscript_dir, config("pytorch", "model.pt")))
    counter = CountingCalls(model.module, lambda x: x.shape[0])
    model.module = counter
    inputs = batches(2, 1, 4)
    responses = model.execute([FakeRequest({"INPUT__0": x}) for x in inputs])
    assert counter.calls == [7]
    for x, response in zip(inputs, responses, strict=True):
        out = response.output("OUTPUT__0")
        assert out.shape == (len(x), CLASSES) and out.dtype == np.float32
        np.testing.assert_allclose(out, reference(x, weights), atol=1e-4)


def test_pytorch_fp16_model_and_fp16_io(tmp_path, weights, monkeypatch):
    import torch

    (tmp_path / "1").mkdir()
    _torch_module(weights, torch.float16).save(str(tmp_path / "1" / "model.pt"))
    backend = load_backend("pytorch", monkeypatch)
    model = backend.TritonPythonModel()
    model.initialize(args_for(tmp_path, config("pytorch", "model.pt", dtype="TYPE_FP16")))
    (x,) = batches(3, dtype=np.float16)
    (response,) = model.execute([FakeRequest({"INPUT__0": x})])
    if response.error and "not implemented for 'Half'" in response.error:
        pytest.skip(f"this torch build has no FP16 CPU kernel for Linear: {response.error}")
    out = response.output("OUTPUT__0")
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), reference(x.astype(np.float32), weights), atol=5e-2, rtol=1e-2)
    # an FP32 request to the FP16 model is refused per request
    (bad,) = model.execute([FakeRequest({"INPUT__0": x.astype(np.float32)})])
    assert "dtype float32" in bad.error


def test_pytorch_error_in_the_module_fails_every_request_of_the_batch(torchscript_dir, monkeypatch):
    backend = load_backend("pytorch", monkeypatch)
    model = backend.TritonPythonModel()
    model.initialize(args_for(torchscript_dir, config("pytorch", "model.pt")))

    def broken(x):
        raise RuntimeError("boom")

    model.module = broken
    responses = model.execute([FakeRequest({"INPUT__0": x}) for x in batches(1, 1)])
    assert all("TorchScript failed: boom" in r.error for r in responses)


@pytest.mark.parametrize("name", ["onnxruntime", "pytorch"])
def test_thread_counts_split_the_cores_among_instances(name, monkeypatch):
    base = base_of(load_backend(name, monkeypatch))
    assert base.thread_counts(config(name, "x", instances=1), cpus=8) == (8, 1)
    assert base.thread_counts(config(name, "x", instances=2), cpus=8) == (4, 1)
    assert base.thread_counts(config(name, "x", instances=4), cpus=2) == (1, 1)
    params = {"parameters": {"intra_op_thread_count": {"string_value": "3"}}}
    if name == "pytorch":
        params = {"parameters": {"INTRA_OP_THREAD_COUNT": {"string_value": "3"}}}
    assert base.thread_counts(config(name, "x", instances=2, **params), cpus=8) == (3, 1)


@pytest.mark.parametrize("name", ["onnxruntime", "pytorch"])
def test_thread_count_spellings_are_read_in_one_order(name, monkeypatch):
    """Both stand-ins accept both spellings; the lower-case one (onnxruntime backend's) wins over libtorch's."""
    base = base_of(load_backend(name, monkeypatch))
    both = {
        "intra_op_thread_count": {"string_value": "3"},
        "INTRA_OP_THREAD_COUNT": {"string_value": "5"},
        "inter_op_thread_count": {"string_value": ""},
        "INTER_OP_THREAD_COUNT": {"string_value": "2"},
    }
    assert base.thread_counts(config(name, "x", parameters=both), cpus=8) == (3, 2)


def test_both_standins_share_one_base_class(tmp_path, monkeypatch):
    """Loaded side by side from a prepared backend directory, both are thin subclasses of ONE base class."""
    backends = install_standins(tmp_path / "backends")
    onnxruntime = load_backend("onnxruntime", monkeypatch, backends)
    pytorch = load_backend("pytorch", monkeypatch, backends)
    base = sys.modules[BASE]
    assert Path(base.__file__).parent.parent == backends
    for backend in (onnxruntime, pytorch):
        assert backend.TritonPythonModel.__mro__[1] is base.StandinModel
        assert issubclass(backend.TritonPythonModel, base.StandinModel)
    assert onnxruntime.TritonPythonModel is not pytorch.TritonPythonModel
    for name in ("onnxruntime", "pytorch"):  # the launcher copies the one base file beside each model.py
        assert (backends / name / STANDIN_BASE).read_bytes() == BACKENDS.joinpath(STANDIN_BASE).read_bytes()


def test_standins_import_nothing_from_the_package():
    for parts in (("onnxruntime", "model.py"), ("pytorch", "model.py"), (STANDIN_BASE,)):
        text = BACKENDS.joinpath(*parts).read_text()
        imports = [line for line in text.splitlines() if line.lstrip().startswith(("import ", "from "))]
        assert imports and not [line for line in imports if "resnext_triton" in line]
