"""Top-k, softmax, the classification extension's strings, output formats, model metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnext_triton.client.cli import format_json, format_table
from resnext_triton.client.discovery import model_info_from, pick_model
from resnext_triton.client.errors import InferenceError, ModelNotReady
from resnext_triton.client.results import (
    ClassificationResult,
    parse_classification,
    softmax,
    top_k_from_logits,
)
from resnext_triton.spec import ModelSpec

LABELS = [f"n{i:08d} class{i}" for i in range(10)]


def test_softmax_is_float64_and_stable() -> None:
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]], dtype=np.float32)
    p = softmax(logits)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(p[1], [0.2, 0.6, 0.2], atol=1e-7)


def test_top_k_from_logits_ranks_and_labels() -> None:
    logits = np.array([0.1, 3.0, 2.0, 3.0, -1.0, 0, 0, 0, 0, 0], dtype=np.float32)
    preds = top_k_from_logits(logits, LABELS, 3)
    assert [(p.rank, p.class_id) for p in preds] == [(1, 1), (2, 3), (3, 2)]  # a tie goes to the lower index
    assert preds[0].label == LABELS[1]
    assert preds[0].probability == pytest.approx(float(softmax(logits)[1]))
    assert preds[0].logit == pytest.approx(3.0)
    assert len(top_k_from_logits(logits, LABELS, 50)) == 10
    assert top_k_from_logits(logits, LABELS[:2], 3)[2].label == "class 2"
    with pytest.raises(InferenceError, match="non-finite"):
        top_k_from_logits(np.array([np.nan, 1.0]), LABELS, 1)


def test_parse_classification_strings() -> None:
    preds = parse_classification([b"12.5:3:n00000003 class3", b"-0.25:7", "1e-3:1:a:b"], LABELS)
    assert [(p.rank, p.class_id, p.logit) for p in preds] == [(1, 3, 12.5), (2, 7, -0.25), (3, 1, 0.001)]
    assert preds[0].label == "n00000003 class3"
    assert preds[1].label == LABELS[7]  # no label from the server: ours
    assert preds[2].label == "a:b"
    assert all(p.probability is None for p in preds)
    with pytest.raises(InferenceError, match="malformed"):
        parse_classification([b"garbage"], LABELS)


def test_json_line_format() -> None:
    ok = ClassificationResult("cat.jpg", top_k_from_logits(np.arange(10.0), LABELS, 2))
    line = json.loads(format_json(ok))
    assert list(line) == ["input", "predictions", "error"]
    assert line["input"] == "cat.jpg" and line["error"] is None
    first = line["predictions"][0]
    assert list(first) == ["rank", "class_id", "label", "probability", "logit"]
    assert first["rank"] == 1 and first["class_id"] == 9 and first["label"] == LABELS[9]
    assert 0 < first["probability"] < 1
    bad = json.loads(format_json(ClassificationResult("x.jpg", error="not an image")))
    assert bad == {"input": "x.jpg", "predictions": [], "error": "not an image"}
    assert "\n" not in format_json(ok)


def test_table_format() -> None:
    ok = ClassificationResult("cat.jpg", top_k_from_logits(np.arange(10.0), LABELS, 2))
    text = format_table(ok)
    lines = text.splitlines()
    assert lines[0] == "cat.jpg"
    assert lines[1].split() == ["rank", "class", "probability", "label"]
    assert lines[2].split()[:2] == ["1", "9"] and lines[2].endswith(LABELS[9])
    assert "logit" in format_table(ok, logits=True).splitlines()[1]
    assert format_table(ClassificationResult("x.jpg", error="boom")) == "x.jpg\n  error: boom"


# ----------------------------------------------------------------------------------------- model


def _meta(shape: list[int], datatype: str = "FP32") -> dict:
    return {
        "inputs": [{"name": "INPUT__0", "datatype": datatype, "shape": shape}],
        "outputs": [{"name": "OUTPUT__0", "datatype": datatype, "shape": [-1, 1000]}],
    }


def _config(fmt: str | None = "FORMAT_NCHW", max_batch: int = 64) -> dict:
    inp = {"name": "INPUT__0"}
    if fmt:
        inp["format"] = fmt
    return {
        "max_batch_size": max_batch,
        "input": [inp],
        "output": [{"name": "OUTPUT__0", "label_filename": "labels.txt"}],
    }


def test_model_info_from_metadata_and_config() -> None:
    spec = ModelSpec()
    info = model_info_from("m", _meta([-1, 3, 224, 224]), _config(), spec)
    assert (info.input_name, info.datatype, info.layout, info.max_batch_size) == ("INPUT__0", "FP32", "NCHW", 64)
    assert info.num_classes == 1000 and info.server_labels and info.batching
    nhwc = model_info_from("m", _meta([-1, 224, 224, 3], "FP16"), _config("FORMAT_NHWC"), spec)
    assert nhwc.layout == "NHWC" and nhwc.datatype == "FP16" and nhwc.input_shape == (224, 224, 3)
    guessed = model_info_from("m", _meta([3, 224, 224]), _config(None, max_batch=0), spec)
    assert guessed.layout == "NCHW" and not guessed.batching


@pytest.mark.parametrize(
    ("meta", "config"),
    [
        (_meta([-1, 3, 256, 256]), _config()),
        (_meta([-1, 3, 224, 224], "INT8"), _config()),
        (_meta([-1, 1000]), _config()),
        ({"inputs": [], "outputs": []}, _config()),
    ],
)
def test_unusable_models_are_refused(meta: dict, config: dict) -> None:
    with pytest.raises(ModelNotReady):
        model_info_from("m", meta, config, ModelSpec())


def test_model_pick_prefers_onnx_then_torchscript() -> None:
    spec = ModelSpec()
    index = [
        {"name": "resnext101_32x4d_torchscript", "state": "READY"},
        {"name": "resnext101_32x4d_onnx", "state": "READY"},
        {"name": "resnext101_32x4d_tensorrt_fp16", "state": "UNAVAILABLE"},
        {"name": "other", "state": "READY"},
    ]
    assert pick_model(index, spec) == "resnext101_32x4d_onnx"
    assert pick_model(index[:1], spec) == "resnext101_32x4d_torchscript"
    assert pick_model([{"name": "my_resnext_onnx", "state": "READY"}], spec) == "my_resnext_onnx"
    assert pick_model(index[2:], spec) is None
