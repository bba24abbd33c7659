"""A fine-tuned variant end to end: ResNeXt50-32x4d with a 10-class head and the user's labels.

Exported with the command line (``--variant resnext50_32x4d --num-classes 10 --labels FILE``, random
weights), served by a local Triton this module starts on free ports (and stops), then classified
through the client, which must print the user's labels, and embedded (2048 features per image).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from resnext_triton.client import TritonClassifier
from resnext_triton.client.cli import main as classify_main
from resnext_triton.client.embed import TritonEmbedder
from resnext_triton.exporters.cli import main as export_main
from resnext_triton.preprocess import preprocess_path
from resnext_triton.runners import Outputs, load_runner
from resnext_triton.spec import Format
from resnext_triton.triton.local import LocalTriton, ServerConfig, ServerError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABELS = ["apple", "bicycle", "cloud", "dune", "ember", "fjord", "glacier", "harbour", "iris", "juniper"]
MODEL = "resnext50_32x4d_onnx"
ATOL = 1e-4


@dataclass
class Served:
    triton: LocalTriton
    repo: Path
    reference: Outputs  # the published artifact's outputs on the photos, in this process


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, photos: list[Path]) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("variant")
    labels = root / "my_labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    repo = root / "model_repository"
    code = export_main([
        "--weights", "random", "--variant", "resnext50_32x4d", "--num-classes", "10", "--labels", str(labels),
        "--formats", "onnx", "--out", str(repo), "--recalibrate-bn", "--no-progress",
    ])
    assert code == 0, "the export of the fine-tuned variant failed"
    batch = np.stack([preprocess_path(p) for p in photos]).astype(np.float32)
    with closing(load_runner(Format.ONNX, repo / MODEL / "1" / "model.onnx")) as runner:
        reference = runner.run(batch)
    triton = LocalTriton(ServerConfig(repo=repo, state_dir=root / "state", http_port=0, grpc_port=0,
                                      metrics_port=0, timeout_s=600))
    try:
        triton.start()
    except ServerError as exc:
        pytest.fail(f"the local Triton did not start: {exc}\n--- Triton log ---\n{exc.log_tail}")
    try:
        yield Served(triton=triton, repo=repo, reference=reference)
    finally:
        triton.stop()


def test_the_variant_serves_its_classes_and_2048_features(served):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(served.triton.grpc_url)
    try:
        meta = client.get_model_metadata(MODEL, as_json=True)
        assert client.is_model_ready(MODEL + "_image") and client.is_model_ready("resnext50_32x4d_preprocess")
    finally:
        client.close()
    outputs = [(o["name"], [int(d) for d in o["shape"]]) for o in meta["outputs"]]
    assert outputs == [("OUTPUT__0", [-1, 10]), ("FEATURES__1", [-1, 2048])]
    assert (served.repo / MODEL / "labels.txt").read_text().splitlines() == LABELS


def test_the_client_picks_the_variant_and_prints_the_users_labels(served, photos):
    with TritonClassifier(served.triton.grpc_url, "grpc", timeout_s=60) as clf:
        assert clf.model_info.name == MODEL and clf.model_info.num_classes == 10
        assert clf.labels == LABELS  # read from the server: the client's own list is ImageNet's
        results = clf.classify(photos, top_k=3)
    expected_top1 = np.argmax(served.reference.logits, axis=1)
    for result, top1 in zip(results, expected_top1, strict=True):
        assert result.ok, result.error
        assert [p.label for p in result.predictions] == [LABELS[p.class_id] for p in result.predictions]
        assert result.predictions[0].class_id == top1
    out, err = io.StringIO(), io.StringIO()
    code = classify_main([str(photos[0]), "-u", served.triton.grpc_url, "-k", "10", "--timeout", "60"], out=out,
                         err=err)
    assert code == 0, err.getvalue()
    printed = [line.split()[-1] for line in out.getvalue().splitlines()[2:]]
    assert sorted(printed) == sorted(LABELS)  # all ten of the user's labels, none of ImageNet's


@pytest.mark.parametrize("server_topk", [False, True])
def test_the_image_pipeline_and_the_server_topk_give_the_users_labels_too(served, photos, server_topk):
    with TritonClassifier(served.triton.http_url, "http", MODEL, timeout_s=60, pipeline=True) as clf:
        assert clf.model_info.name == MODEL + "_image" and clf.labels == LABELS
        results = clf.classify(photos[:3], top_k=2, server_topk=server_topk)
    for result, logits in zip(results, served.reference.logits[:3], strict=True):
        assert result.ok, result.error
        assert result.predictions[0].class_id == int(np.argmax(logits))
        assert result.predictions[0].label == LABELS[int(np.argmax(logits))]


def test_the_variant_gives_2048_d_embeddings_equal_to_the_artifact(served, photos):
    with TritonEmbedder(served.triton.grpc_url, "grpc", MODEL, timeout_s=60) as embedder:
        results = embedder.embed(photos)
    assert served.reference.features is not None
    for result, expected in zip(results, served.reference.features, strict=True):
        assert result.features is not None, result.error
        assert result.features.shape == (2048,)
        assert np.max(np.abs(result.features - expected)) <= ATOL
