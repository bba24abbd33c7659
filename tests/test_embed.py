"""Embeddings and served labels on the client side, without a server: requests, files, the README example."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_triton.client.discovery import ModelInfo, model_info_from
from resnext_triton.client.embed import (
    EmbeddingResult,
    embed_batch,
    load_embeddings,
    names_path,
    nearest,
    save_embeddings,
)
from resnext_triton.client.embed_cli import build_parser, main
from resnext_triton.client.errors import InferenceError
from resnext_triton.client.inference import infer_batch
from resnext_triton.client.inputs import Source
from resnext_triton.client.labels import fetch_server_labels, resolve_labels
from resnext_triton.client.pipeline import Batch, Prepared
from resnext_triton.client.transport import InferRequest
from resnext_triton.spec import ModelSpec, labels_digest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SPEC = ModelSpec()
PARTS = [f"part {i}" for i in range(10)]


def _info(**changes: object) -> ModelInfo:
    fields: dict = dict(
        name="m", input_name="INPUT__0", datatype="FP32", layout="NCHW", input_shape=(3, 224, 224),
        max_batch_size=8, output_name="OUTPUT__0", num_classes=1000, server_labels=True,
        features_name="FEATURES__1", feature_dim=2048, labels_sha256=labels_digest(SPEC.labels()),
    )
    fields.update(changes)
    return ModelInfo(**fields)


class FakeSession:
    """Records every request; answers with ``answer(request)``."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[InferRequest] = []

    def infer(self, request: InferRequest) -> np.ndarray:
        self.requests.append(request)
        return self.answer(request)


class FakeTransport:
    def __init__(self, session: FakeSession):
        self.session = session

    @contextmanager
    def infer_session(self):
        yield self.session


def _batch(n: int, failed: tuple[int, ...] = ()) -> Batch:
    entries = tuple(
        Prepared(Source.file(f"img{i}.jpg"), error="broken") if i in failed
        else Prepared(Source.file(f"img{i}.jpg"), array=np.full((3, 224, 224), i, np.float32))
        for i in range(n)
    )
    return Batch(0, entries)


def test_model_info_reads_the_features_output_and_the_labels_digest():
    meta = {
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 10]},
                    {"name": "FEATURES__1", "datatype": "FP32", "shape": [-1, 2048]}],
    }
    config = {"max_batch_size": 64, "input": [{"format": "FORMAT_NCHW"}],
              "output": [{"name": "OUTPUT__0", "label_filename": "labels.txt"}],
              "parameters": {"labels_sha256": {"string_value": labels_digest(PARTS)}}}
    info = model_info_from("r50", meta, config, SPEC)
    assert (info.output_name, info.num_classes, info.server_labels) == ("OUTPUT__0", 10, True)
    assert (info.features_name, info.feature_dim, info.labels_sha256) == ("FEATURES__1", 2048, labels_digest(PARTS))
    old = model_info_from("old", {**meta, "outputs": meta["outputs"][:1]}, {"max_batch_size": 64}, SPEC)
    assert old.features_name is None and old.feature_dim is None and old.labels_sha256 is None


def test_classification_asks_for_the_logits_alone_and_embedding_for_the_features_alone():
    logits = FakeSession(lambda r: np.zeros((len(r.data), 1000), np.float32))
    results = infer_batch(logits, _batch(2), _info(), top_k=3, server_topk=False, labels=SPEC.labels())
    assert [r.ok for r in results] == [True, True]
    assert [(r.output_name, r.class_count) for r in logits.requests] == [("OUTPUT__0", 0)]

    def rows(request: InferRequest) -> np.ndarray:
        return request.data.reshape(len(request.data), -1)[:, :2048].astype(np.float16)  # as an FP16 model answers

    features = FakeSession(rows)
    results = embed_batch(features, _batch(3, failed=(1,)), info=_info())
    assert [(r.output_name, r.class_count, len(r.data)) for r in features.requests] == [("FEATURES__1", 0, 2)]
    assert [r.input for r in results] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert results[1] == EmbeddingResult("img1.jpg", error="broken") and not results[1].ok
    assert results[2].features is not None and results[2].features.dtype == np.float32
    assert results[2].features.shape == (2048,) and (results[2].features == 2).all()


def test_embedding_failures_are_per_batch_and_a_wrong_width_is_an_error():
    def refuse(request: InferRequest) -> np.ndarray:
        raise InferenceError("inference failed: boom")

    failed = embed_batch(FakeSession(refuse), _batch(2), info=_info())
    assert [r.error for r in failed] == ["inference failed: boom"] * 2
    narrow = embed_batch(FakeSession(lambda r: np.zeros((len(r.data), 7), np.float32)), _batch(1), info=_info())
    assert narrow[0].error is not None and "unexpected features shape (7,)" in narrow[0].error


def test_the_clients_own_labels_are_used_when_the_digest_matches():
    session = FakeSession(lambda r: pytest.fail("no request expected"))
    assert resolve_labels(_info(), SPEC, FakeTransport(session)) == SPEC.labels()
    undeclared = _info(labels_sha256=None)  # a model exported before the digest: trusted when the count fits
    assert resolve_labels(undeclared, SPEC, FakeTransport(session)) == SPEC.labels()
    assert resolve_labels(_info(server_labels=False, num_classes=10), SPEC, FakeTransport(session)) == SPEC.labels()


def _classification(labels: list[str]):
    def answer(request: InferRequest) -> np.ndarray:
        assert request.class_count == len(labels) and request.output_name == "OUTPUT__0"
        order = list(reversed(range(len(labels))))  # Triton answers by value, not by index
        return np.array([[f"{0.5 - i / 100:.6f}:{i}:{labels[i]}".encode() for i in order]], dtype=object)

    return answer


@pytest.mark.parametrize("digest", [labels_digest(PARTS), None])
def test_a_fine_tuned_models_labels_are_read_from_the_server(digest):
    session = FakeSession(_classification(PARTS))
    info = _info(num_classes=10, labels_sha256=digest)
    assert resolve_labels(info, SPEC, FakeTransport(session)) == PARTS
    (request,) = session.requests
    assert request.data.shape == (1, 3, 224, 224) and request.data.dtype == np.float32 and not request.data.any()


def test_an_image_pipeline_is_asked_with_a_tiny_encoded_image():
    session = FakeSession(_classification(PARTS))
    info = _info(name="m_image", input_name="IMAGE", datatype="UINT8", layout="", takes_bytes=True, num_classes=10,
                 labels_sha256=labels_digest(PARTS))
    assert fetch_server_labels(FakeTransport(session), info) == PARTS
    (request,) = session.requests
    assert request.data.dtype == np.uint8 and request.data.shape[0] == 1
    assert Image.open(io.BytesIO(request.data[0].tobytes())).size == (8, 8)


def test_unreadable_server_labels_fall_back_to_the_clients_with_a_warning(caplog):
    garbled = FakeSession(lambda r: np.array([[b"0.5:x:nonsense"]], dtype=object))
    with caplog.at_level(logging.WARNING):
        labels = resolve_labels(_info(num_classes=10, labels_sha256=labels_digest(PARTS)), SPEC, FakeTransport(garbled))
    assert labels == SPEC.labels() and "cannot read the labels of model m" in caplog.text
    short = FakeSession(lambda r: np.array([[b"0.5:3:part 3"]], dtype=object))
    with pytest.raises(InferenceError, match="answered 1 of 10 labels"):
        fetch_server_labels(FakeTransport(short), _info(num_classes=10))


def test_embeddings_round_trip_through_the_two_files(tmp_path):
    features = np.random.default_rng(0).standard_normal((3, 2048)).astype(np.float32)
    names = ["photos/a.jpg", "photos/b c.png", "https://example.org/d.jpg"]
    listing = save_embeddings(tmp_path / "out" / "features.npy", names, features)
    assert listing == names_path(tmp_path / "out" / "features.npy") == tmp_path / "out" / "features.txt"
    assert listing.read_text() == "photos/a.jpg\nphotos/b c.png\nhttps://example.org/d.jpg\n"
    loaded_names, loaded = load_embeddings(tmp_path / "out" / "features.npy")
    assert loaded_names == names and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, features)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["features.npy", "features.txt"]  # no temp files
    with pytest.raises(ValueError, match=r"must end in \.npy"):
        save_embeddings(tmp_path / "features.npz", names, features)
    with pytest.raises(ValueError, match="2 names for 3 rows"):
        save_embeddings(tmp_path / "f.npy", names[:2], features)
    with pytest.raises(ValueError, match="line break"):
        save_embeddings(tmp_path / "f.npy", ["a", "b\nc", "d"], features)
    (tmp_path / "out" / "features.txt").write_text("only one\n")
    with pytest.raises(ValueError, match="names 1 inputs"):
        load_embeddings(tmp_path / "out" / "features.npy")


def test_nearest_ranks_by_cosine_similarity():
    features = np.array([[1.0, 0.0], [10.0, 1.0], [0.0, 3.0], [-1.0, 0.0]])
    ranked = nearest(features, np.array([2.0, 0.0]), k=3)
    assert [i for i, _ in ranked] == [0, 1, 2]
    assert ranked[0][1] == pytest.approx(1.0) and ranked[1][1] == pytest.approx(10 / np.sqrt(101))
    assert ranked[2][1] == pytest.approx(0.0)


def _readme_example() -> str:
    section = README.split("## Embeddings", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"<!-- nearest-neighbours-example -->\n```python\n(.*?)```", section, flags=re.S)
    assert match, "the README's Embeddings section lost its nearest-neighbours example"
    return match.group(1)


def test_the_readme_nearest_neighbours_example_runs_as_written(tmp_path):
    rng = np.random.default_rng(0)
    cat = rng.random(2048)
    rows = [rng.random(2048), cat + 0.01 * rng.random(2048), cat, rng.random(2048), cat + 0.1 * rng.random(2048)]
    names = ["photos/dog.jpg", "photos/cat2.jpg", "photos/cat.jpg", "photos/car.png", "photos/cat3.jpg"]
    save_embeddings(tmp_path / "features.npy", names, np.stack(rows))
    result = subprocess.run([sys.executable, "-c", _readme_example()], cwd=tmp_path, capture_output=True, text=True,
                            check=True)
    lines = [line.split() for line in result.stdout.splitlines()]
    assert len(lines) == 5 and lines[0] == ["1.000", "photos/cat.jpg"]  # the photo itself comes first
    assert [name for _, name in lines[1:3]] == ["photos/cat2.jpg", "photos/cat3.jpg"]  # then its look-alikes
    scores = [float(score) for score, _ in lines]
    assert scores == sorted(scores, reverse=True)


def test_the_readme_embed_command_uses_only_real_options():
    section = README.split("## Embeddings", 1)[1].split("\n## ", 1)[0]
    commands = [block.replace("\\\n", " ") for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]
    options = set(re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*", " ".join(commands)))
    known = set(re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*", build_parser().format_help()))
    assert "--out" in options and options <= known, options - known


def test_cli_refuses_a_features_file_that_is_not_npy(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["photo.jpg", "--out", "features.npz"])
    assert exit_info.value.code == 2 and "must end in .npy" in capsys.readouterr().err


def test_cli_reports_an_unreachable_server_with_exit_3(tmp_path):
    photo = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(photo)
    err = io.StringIO()
    code = main([str(photo), "--out", str(tmp_path / "f.npy"), "-u", "127.0.0.1:9", "--timeout", "1"], err=err)
    assert code == 3 and "not reachable" in err.getvalue()
    assert not (tmp_path / "f.npy").exists()


def test_a_model_without_the_features_output_is_refused_with_the_fix():
    from resnext_triton.client.embed import TritonEmbedder
    from resnext_triton.client.errors import ModelNotReady

    embedder = TritonEmbedder("127.0.0.1:9", "grpc", "old_model")
    embedder._info = _info(name="old_model", features_name=None, feature_dim=None)  # as discovery found it
    with embedder, pytest.raises(ModelNotReady, match=r"old_model has no FEATURES__1 output .*export it again"):
        embedder.embed(["photo.jpg"])
