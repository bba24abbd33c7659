"""The exporters on the full-size model (random weights), validated against eager on real photos."""

import json

import numpy as np
import pytest

from resnext_triton.exporters import ValidationError
from resnext_triton.exporters.cli import main
from resnext_triton.exporters.onnx2trt import tensorrt_available
from resnext_triton.exporters.validate import TOLERANCES, compare, raise_on_failure
from resnext_triton.runners import EagerRunner, Outputs, Runner
from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.repository import read_manifest, versions

pytestmark = pytest.mark.slow


def test_full_size_export_validates_both_outputs(exported_repo, photos):
    assert [r.fmt for r in exported_repo.results] == [Format.TORCHSCRIPT, Format.ONNX, Format.ONNX_INT8]
    for result in exported_repo.results:
        report = result.report
        assert result.ok and report is not None and report.ok
        assert report.photos == len(photos) and report.random_inputs == 2
        features = report.features
        line = result.line()
        assert line.startswith(result.fmt.value) and line.endswith("ok") and " MB)" in line
        if result.fmt is Format.ONNX_INT8:  # judged by SQNR, the features like the logits
            bound = report.tolerance.min_sqnr_db
            assert bound is not None and features["sqnr_db"] >= bound and report.extra["sqnr_db"] >= bound
            assert f"features SQNR {features['sqnr_db']:.1f} dB" in line
            continue
        assert report.max_abs <= 1e-3
        assert report.topk_identical == report.photos == report.top1_agree
        assert features["max_abs_diff"] <= 1e-3 and features["min_cosine"] > 0.99999
        assert "max|diff|" in line and "features max|diff|" in line


def test_manifest_records_weights_tools_and_validation(exported_repo, photos):
    for fmt in (Format.TORCHSCRIPT, Format.ONNX):
        model_dir = exported_repo.path / exported_repo.spec.model_name(fmt)
        assert versions(model_dir) == [1]
        assert (model_dir / "1" / fmt.filename).is_file()
        manifest = read_manifest(model_dir / "1")
        assert manifest["weights"] == {
            "source": "random", "path": None, "sha256": None, "trained": False,
            "batchnorm_reestimated_on_images": len(photos),
        }
        assert manifest["tools"]["torch"].startswith("2.13")
        assert manifest["validation"]["ok"] is True
        assert manifest["preprocessing"]["preprocess_crop"] == "224"  # the spec travels with the model
        assert manifest["validation"]["max_abs_diff"] <= 1e-3
        assert (model_dir / "labels.txt").read_text().splitlines()[0] == "n01440764 tench, Tinca tinca"
        assert manifest["features"] == {"name": "FEATURES__1", "shape": [2048]}
        assert manifest["validation"]["features"]["max_abs_diff"] <= 1e-3
        assert (model_dir / "configs" / "cpu.pbtxt").is_file()


def test_onnx_interface(exported_repo):
    import onnx

    path = exported_repo.path / "resnext101_32x4d_onnx" / "1" / "model.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == ["INPUT__0"]
    assert [o.name for o in proto.graph.output] == ["OUTPUT__0", "FEATURES__1"]
    for value in (proto.graph.input[0], *proto.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        logits, features = session.run(None, {"INPUT__0": np.zeros((batch, 3, 224, 224), np.float32)})
        assert logits.shape == (batch, 1000) and features.shape == (batch, 2048)


def test_int8_model_keeps_both_outputs(exported_repo):
    import onnxruntime as ort

    path = exported_repo.path / "resnext101_32x4d_onnx_int8" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["OUTPUT__0", "FEATURES__1"]
    logits, features = session.run(None, {"INPUT__0": np.zeros((2, 3, 224, 224), np.float32)})
    assert logits.shape == (2, 1000) and features.shape == (2, 2048)


def test_compare_catches_every_failure(exported_repo):
    reference = EagerRunner(exported_repo.eager)
    photos = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)

    def shifted(batch):
        out = reference(batch)
        out[:, :] = out[:, ::-1]  # different classes
        return out + 0.5

    def nan(batch):
        out = reference(batch)
        out[0, 0] = np.nan
        return out

    bad = compare("shifted", "fp32", reference, shifted, photos, photos[:0])
    assert not bad.ok and any("max |diff|" in f for f in bad.failures) and any("top-1" in f for f in bad.failures)
    assert "features: the artifact has no features output" in bad.failures  # the eager reference has features
    broken = compare("nan", "fp32", reference, nan, photos, photos[:0])
    assert broken.failures == ["features: the artifact has no features output", "1 NaN/inf values in the output"]
    with pytest.raises(ValidationError, match=r"(?s)shifted: .*nan: .*1 NaN"):
        raise_on_failure([bad, broken])
    assert TOLERANCES["fp32"].max_abs == 1e-3


class _Perturbed(Runner):
    """A runner whose features are the reference's, changed by ``change``."""

    def __init__(self, reference, change):
        super().__init__()
        self.reference, self.change = reference, change

    def run(self, batch):
        out = self.reference.run(batch)
        return Outputs(out.logits, self.change(out.features.copy()))

    def close(self):
        pass


def test_compare_holds_the_features_to_the_bounds(exported_repo):
    reference = EagerRunner(exported_repo.eager)
    photos = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)

    def nan(f):
        f[0, 0] = np.inf
        return f

    cases = {
        "same": (lambda f: f, []),
        "off": (lambda f: f + 0.01, ["features: max |diff| 0.01 > 0.001"]),
        "nan": (nan, ["features: 1 NaN/inf values"]),
        "narrow": (lambda f: f[:, :100], ["features: shape (2, 100) != eager (2, 2048)"]),
    }
    for name, (change, failures) in cases.items():
        report = compare(name, "fp32", reference, _Perturbed(reference, change), photos, photos[:0])
        assert report.failures == failures, name
    same = compare("same", "fp32", reference, _Perturbed(reference, lambda f: f), photos, photos[:0])
    assert same.features["max_abs_diff"] == 0 and same.features["min_cosine"] == pytest.approx(1.0)


def test_out_of_tolerance_export_exits_nonzero_and_publishes_nothing(tmp_path, capsys):
    code = main(["--weights", "random", "--variant", "resnext50_32x4d", "--formats", "onnx", "--out",
                 str(tmp_path), "--atol", "1e-12", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED" in out and "max |diff|" in out
    assert versions(tmp_path / "resnext50_32x4d_onnx") == []


def test_skip_validation_is_explicit_and_reported(tmp_path, capsys):
    code = main(["--weights", "random", "--variant", "resnext50_32x4d", "--formats", "torchscript", "--out",
                 str(tmp_path), "--skip-validation", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "validation skipped" in out and "RANDOM" in out
    manifest = json.loads((tmp_path / "resnext50_32x4d_torchscript" / "1" / "export_manifest.json").read_text())
    assert manifest["validation"] == {"skipped": True}


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here; see tests/test_tensorrt.py")
@pytest.mark.parametrize("fmt", ["tensorrt", "tensorrt_int8"])
def test_tensorrt_without_tensorrt_fails_with_the_route(tmp_path, capsys, fmt):
    code = main(["--weights", "random", "--variant", "resnext50_32x4d", "--formats", fmt, "--out",
                 str(tmp_path), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "TensorRT is not installed" in captured.out + captured.err
    assert "export/Dockerfile" in captured.out + captured.err
    assert versions(tmp_path / ModelSpec(variant="resnext50_32x4d").model_name(Format(fmt))) == []


def test_bad_arguments(capsys, tmp_path):
    assert main(["--weights", "random", "--formats", "tflite", "--out", str(tmp_path)]) == 2
    assert "unknown format" in capsys.readouterr().err
    assert main(["--weights", "random", "--num-classes", "10", "--out", str(tmp_path)]) == 2
    assert main(["--weights", str(tmp_path / "missing.pt"), "--formats", "onnx", "--out", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
