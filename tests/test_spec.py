import pytest

from resnext_triton.spec import Format, ModelSpec, Preprocessing


def test_labels_are_the_1000_imagenet_classes():
    labels = ModelSpec().labels()
    assert len(labels) == 1000
    assert labels[0] == "n01440764 tench, Tinca tinca"
    assert labels[934].startswith("n07697537 hotdog")


def test_model_names():
    spec = ModelSpec()
    assert spec.model_name(Format.TORCHSCRIPT) == "resnext101_32x4d_torchscript"
    assert spec.model_name(Format.ONNX) == "resnext101_32x4d_onnx"
    assert spec.model_name(Format.TENSORRT) == "resnext101_32x4d_tensorrt_fp16"
    assert spec.model_name(Format.TENSORRT_INT8) == "resnext101_32x4d_tensorrt_int8"
    assert spec.input_shape == (3, 224, 224)


def test_formats_know_their_file_and_kind():
    assert {f: f.filename for f in Format} == {
        Format.TORCHSCRIPT: "model.pt", Format.ONNX: "model.onnx", Format.ONNX_INT8: "model.onnx",
        Format.TENSORRT: "model.plan", Format.TENSORRT_INT8: "model.plan",
    }
    assert [f for f in Format if f.is_plan] == [Format.TENSORRT, Format.TENSORRT_INT8]
    assert [f for f in Format if f.is_int8] == [Format.ONNX_INT8, Format.TENSORRT_INT8]


def test_format_list_parsing():
    assert Format.parse_list("onnx, torchscript,onnx") == [Format.ONNX, Format.TORCHSCRIPT]
    with pytest.raises(ValueError, match="unknown format 'tflite'"):
        Format.parse_list("onnx,tflite")


def test_spec_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        ModelSpec(variant="resnet50")
    with pytest.raises(ValueError, match="needs its own label file"):
        ModelSpec(num_classes=10)
    with pytest.raises(ValueError, match="crop"):
        Preprocessing(resize_shorter=200, crop=224)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    assert ModelSpec(num_classes=2, labels_path=labels).labels() == ["cat", "dog"]
    with pytest.raises(ValueError, match="has 2 labels, the model has 3 classes"):
        ModelSpec(num_classes=3, labels_path=labels).labels()
