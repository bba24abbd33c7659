"""The client's side of the image pipeline: discovery of byte-taking models and of the served preprocessing."""

from __future__ import annotations

import logging

import pytest

from resnext_triton.client.discovery import model_info_from, pick_model
from resnext_triton.client.errors import ModelNotReady
from resnext_triton.spec import ModelSpec, Preprocessing

SPEC = ModelSpec()


def _meta(datatype: str = "UINT8", shape: list[int] | None = None) -> dict:
    return {
        "inputs": [{"name": "IMAGE", "datatype": datatype, "shape": shape or [-1, -1]}],
        "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 1000]}],
    }


def _config(params: dict[str, str] | None = None) -> dict:
    return {
        "max_batch_size": 64,
        "output": [{"name": "OUTPUT__0", "label_filename": "labels.txt"}],
        "parameters": {k: {"string_value": v} for k, v in (params or {}).items()},
    }


def test_a_byte_taking_model_is_an_image_pipeline():
    params = Preprocessing().to_parameters()
    info = model_info_from("m_image", _meta(), _config(params), SPEC)
    assert info.takes_bytes and info.datatype == "UINT8" and info.server_labels and info.num_classes == 1000
    assert info.preprocessing == Preprocessing()


def test_served_preprocessing_wins_over_the_default_and_a_missing_one_warns(caplog):
    custom = Preprocessing(resize_shorter=288, crop=256, interpolation="bicubic", mean=(0.5, 0.5, 0.5))
    meta = {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 3, 256, 256]}],
            "outputs": [{"name": "OUTPUT__0", "shape": [-1, 1000]}]}
    config = {**_config(custom.to_parameters()), "input": [{"format": "FORMAT_NCHW"}]}
    info = model_info_from("m", meta, config, SPEC)
    assert info.preprocessing == custom and info.input_shape == (3, 256, 256) and not info.takes_bytes
    with caplog.at_level(logging.WARNING):
        plain = model_info_from("old", _meta("FP32", [-1, 3, 224, 224]), _config(), SPEC)
    assert plain.preprocessing is None and "declares no preprocessing parameters" in caplog.text
    with pytest.raises(ModelNotReady, match="preprocessing"):
        model_info_from("bad", _meta(), _config({"preprocess_crop": "224"}), SPEC)


def test_uint8_input_that_is_not_one_file_per_element_is_refused():
    with pytest.raises(ModelNotReady, match="one encoded file"):
        model_info_from("m", _meta("UINT8", [-1, 224, 224, 3]), _config(), SPEC)


def test_pick_model_prefers_pipelines_only_when_asked():
    index = [{"name": n, "state": "READY"} for n in (
        "resnext101_32x4d_onnx", "resnext101_32x4d_onnx_image", "resnext101_32x4d_preprocess",
        "resnext101_32x4d_torchscript_image",
    )]
    assert pick_model(index, SPEC) == "resnext101_32x4d_onnx"
    assert pick_model(index, SPEC, pipeline=True) == "resnext101_32x4d_onnx_image"
    only_pre = [{"name": "resnext101_32x4d_preprocess", "state": "READY"}]
    assert pick_model(only_pre, SPEC) is None  # the preprocessing step is no classifier


def test_preprocessing_parameters_round_trip_and_reject_bad_values():
    pre = Preprocessing(resize_shorter=300, crop=240, interpolation="nearest", mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    assert Preprocessing.from_parameters(pre.to_parameters()) == pre
    assert Preprocessing.from_parameters({"other": "x"}) is None
    bad = {**pre.to_parameters(), "preprocess_layout": "NHWC"}
    with pytest.raises(ValueError, match="NCHW only"):
        Preprocessing.from_parameters(bad)
    with pytest.raises(ValueError, match="three values"):
        Preprocessing.from_parameters({**pre.to_parameters(), "preprocess_mean": "0.5,0.5"})
