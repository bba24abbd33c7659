"""Embeddings on the real local Triton: FEATURES__1 served by every format and image pipeline, equal to eager;
only the requested outputs on the wire; ``client/embed.py`` and the README's nearest-neighbours example."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

from resnext_triton.client import TritonClassifier
from resnext_triton.client.embed import TritonEmbedder, load_embeddings
from resnext_triton.preprocess import preprocess_path
from resnext_triton.runners import EagerRunner, load_runner
from resnext_triton.spec import Format
from resnext_triton.triton.ensemble import ensemble_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FORMATS = [Format.ONNX, Format.TORCHSCRIPT]
ATOL = 1e-4  # served (stand-in) vs the same artifact run in this process, FP32
EAGER_ATOL = 1e-3  # served vs the eager model: the export's FP32 bound
PIPELINE_ATOL = 1e-5  # image pipeline vs tensor endpoint: the same preprocessing module on both sides


@pytest.fixture(scope="module")
def eager_features(exported_repo, photos) -> dict[str, np.ndarray]:
    """The eager model's features of every photo, by the photo's file name."""
    batch = np.stack([preprocess_path(p) for p in photos]).astype(np.float32)
    features = EagerRunner(exported_repo.eager).run(batch).features
    assert features is not None
    return {Path(p).name: row for p, row in zip(photos, features, strict=True)}


@pytest.fixture(scope="module")
def artifact_features(triton_server, photos) -> dict[Format, np.ndarray]:
    """The served artifacts' features of the first three photos, run in this process."""
    batch = np.stack([preprocess_path(p) for p in photos[:3]]).astype(np.float32)
    out = {}
    for fmt in FORMATS:
        runner = load_runner(fmt, triton_server.repo / triton_server.models[fmt] / "1" / fmt.filename)
        out[fmt] = runner.run(batch).features
        runner.close()
    return out


def _request(protocol: str, triton_server, model: str, batch: np.ndarray, outputs: list[str] | None):
    """One raw tritonclient request; returns (the output names in the response, the result)."""
    if protocol == "http":
        client = httpclient.InferenceServerClient(triton_server.http_address)
        inp = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=True)
        asked = None if outputs is None else [httpclient.InferRequestedOutput(n, binary_data=True) for n in outputs]
        result = client.infer(model, [inp], outputs=asked)
        names = [o["name"] for o in result.get_response()["outputs"]]
    else:
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        inp = grpcclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        result = client.infer(model, [inp], outputs=None if outputs is None else [
            grpcclient.InferRequestedOutput(n) for n in outputs])
        names = [o["name"] for o in result.get_response(as_json=True)["outputs"]]
    client.close()
    return names, result


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_served_features_equal_eager_and_only_asked_outputs_come_back(triton_server, photos, eager_features,
                                                                      artifact_features, fmt, protocol):
    batch = np.stack([preprocess_path(p) for p in photos[:3]]).astype(np.float32)
    model = triton_server.models[fmt]
    names, result = _request(protocol, triton_server, model, batch, ["FEATURES__1"])
    assert names == ["FEATURES__1"]  # the logits stay on the server
    features = result.as_numpy("FEATURES__1")
    assert features.shape == (3, 2048) and features.dtype == np.float32
    expected = np.stack([eager_features[Path(p).name] for p in photos[:3]])
    assert np.max(np.abs(features - artifact_features[fmt])) <= ATOL
    assert np.max(np.abs(features - expected)) <= EAGER_ATOL
    names, _ = _request(protocol, triton_server, model, batch, ["OUTPUT__0"])
    assert names == ["OUTPUT__0"]
    names, result = _request(protocol, triton_server, model, batch, None)  # no output named: every output
    assert sorted(names) == ["FEATURES__1", "OUTPUT__0"]
    assert np.max(np.abs(result.as_numpy("FEATURES__1") - artifact_features[fmt])) <= ATOL


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_client_asks_for_one_output_and_receives_only_that(triton_server, photos, monkeypatch, protocol):
    """classify() sends requests naming OUTPUT__0 alone, embed() FEATURES__1 alone; responses carry nothing more."""
    module = httpclient if protocol == "http" else grpcclient
    seen: list[tuple[list[str], list[str]]] = []
    original = module.InferenceServerClient.infer

    def infer(self, model_name, inputs, *args, **kwargs):
        result = original(self, model_name, inputs, *args, **kwargs)
        response = result.get_response() if protocol == "http" else result.get_response(as_json=True)
        seen.append(([o.name() for o in kwargs.get("outputs") or []], [o["name"] for o in response["outputs"]]))
        return result

    monkeypatch.setattr(module.InferenceServerClient, "infer", infer)
    url = triton_server.http_address if protocol == "http" else triton_server.grpc_url
    model = triton_server.models[Format.ONNX]
    with TritonClassifier(url, protocol, model, timeout_s=30) as clf:
        results = clf.classify(photos[:3], batch_size=2)
    assert all(r.ok for r in results)
    assert seen == [(["OUTPUT__0"], ["OUTPUT__0"])] * 2  # two batches; no label request (the digest matched)
    seen.clear()
    with TritonEmbedder(url, protocol, model, timeout_s=30) as embedder:
        embedded = embedder.embed(photos[:3], batch_size=2)
    assert [r.features.shape for r in embedded if r.features is not None] == [(2048,)] * 3
    assert seen == [(["FEATURES__1"], ["FEATURES__1"])] * 2


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_image_pipeline_exposes_the_features(triton_server, photos, eager_features, fmt):
    model = triton_server.models[fmt]
    with TritonEmbedder(triton_server.grpc_url, "grpc", model, timeout_s=30) as tensors:
        by_tensor = tensors.embed(photos)
    with TritonEmbedder(triton_server.grpc_url, "grpc", model, timeout_s=30, pipeline=True) as files:
        assert files.model_info.name == ensemble_name(triton_server.spec, fmt)
        assert files.model_info.features_name == "FEATURES__1" and files.model_info.feature_dim == 2048
        by_file = files.embed(photos)
    for tensor, file, photo in zip(by_tensor, by_file, photos, strict=True):
        assert tensor.features is not None and file.features is not None, (tensor.error, file.error)
        assert np.max(np.abs(file.features - tensor.features)) <= PIPELINE_ATOL
        assert np.max(np.abs(tensor.features - eager_features[Path(photo).name])) <= EAGER_ATOL


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Embeddings", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"<!-- nearest-neighbours-example -->\n```python\n(.*?)```", section, flags=re.S)
    assert match, "the README's Embeddings section lost its nearest-neighbours example"
    return match.group(1)


def test_embed_cli_and_the_readme_nearest_neighbours_example(triton_server, photos, eager_features, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    by_name = {Path(p).name: Path(p) for p in photos}
    Image.open(by_name["chelsea.png"]).convert("RGB").save(folder / "cat.jpg", quality=95)
    for name, path in by_name.items():
        if name != "chelsea.png":
            shutil.copy(path, folder / name)
    (folder / "notes.jpg").write_text("not an image")
    command = [sys.executable, str(ROOT / "client" / "embed.py"), "photos/", "--out", "features.npy",
               "-u", triton_server.grpc_url]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr  # one input is no image
    assert "error: photos/notes.jpg: not an image" in done.stderr
    assert re.search(r"embedded \d+ of \d+ inputs \(1 failed\) .*features\.npy \(\d+ x 2048 float32\)", done.stderr)
    names, features = load_embeddings(tmp_path / "features.npy")
    assert sorted(names) == sorted(f"photos/{p.name}" for p in folder.iterdir() if p.name != "notes.jpg")
    assert features.shape == (len(names), 2048) and features.dtype == np.float32
    for name, row in zip(names, features, strict=True):
        if name != "photos/cat.jpg":  # re-encoded as JPEG: the eager reference is of the PNG
            assert np.max(np.abs(row - eager_features[Path(name).name])) <= EAGER_ATOL

    shown = subprocess.run([sys.executable, "-c", _readme_example()], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    ranked = [line.split(maxsplit=1) for line in shown]
    assert len(ranked) == 5 and ranked[0] == ["1.000", "photos/cat.jpg"]  # the query itself first
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    scores = unit @ unit[names.index("photos/cat.jpg")]
    expected = [names[i] for i in np.argsort(-scores)[:5]]
    assert [name for _, name in ranked] == expected
    assert [float(score) for score, _ in ranked] == pytest.approx([float(scores[names.index(n)]) for n in expected],
                                                                  abs=6e-4)  # printed with 3 decimals
