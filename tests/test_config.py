from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from resnext_triton.spec import Format, ModelSpec, labels_digest
from resnext_triton.triton.config import ServingOptions, build_config, graph_batch_sizes, parse_pbtxt, to_pbtxt
from resnext_triton.triton.ensemble import build_ensemble_config
from resnext_triton.triton.repository import CPU_CONFIG, write_configs

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "model_repository"


@pytest.mark.parametrize("fmt", list(Format))
def test_gpu_config_round_trips_through_tritons_schema(fmt):
    spec = ModelSpec()
    config = parse_pbtxt(to_pbtxt(build_config(spec, fmt, ServingOptions())))
    assert config.name == spec.model_name(fmt)
    backends = {"torchscript": "pytorch", "onnx": "onnxruntime", "onnx_int8": "onnxruntime", "tensorrt": "tensorrt",
                "tensorrt_int8": "tensorrt"}
    assert config.backend == backends[fmt.value]
    assert config.max_batch_size == 64
    (inp,) = config.input
    assert (inp.name, list(inp.dims), inp.format) == ("INPUT__0", [3, 224, 224], mc.ModelInput.FORMAT_NCHW)
    logits, features = config.output
    assert (logits.name, list(logits.dims), logits.label_filename) == ("OUTPUT__0", [1000], "labels.txt")
    assert (features.name, list(features.dims), features.label_filename) == ("FEATURES__1", [2048], "")
    assert logits.data_type == features.data_type == mc.TYPE_FP32
    assert config.parameters["labels_sha256"].string_value == labels_digest(spec.labels())
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    # INT8 runs on ONNX Runtime's CPU kernels on every host
    kind = mc.ModelInstanceGroup.KIND_CPU if fmt is Format.ONNX_INT8 else mc.ModelInstanceGroup.KIND_GPU
    assert config.instance_group[0].kind == kind
    assert config.model_warmup[0].inputs["INPUT__0"].random_data
    assert config.optimization.cuda.graphs == fmt.is_plan


def test_cpu_config_has_no_gpu_options():
    options = ServingOptions(ort_tensorrt_fp16=True, cpu_instances=3)
    config = build_config(ModelSpec(), Format.ONNX, options, cpu=True)
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert config.instance_group[0].count == 3
    assert not config.HasField("optimization")
    for plan in (Format.TENSORRT, Format.TENSORRT_INT8):
        with pytest.raises(ValueError, match="only on a GPU"):
            build_config(ModelSpec(), plan, options, cpu=True)


def test_onnx_tensorrt_accelerator_and_fp16_torchscript():
    config = build_config(ModelSpec(), Format.ONNX, ServingOptions(ort_tensorrt_fp16=True))
    (accel,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
    ts = build_config(ModelSpec(), Format.TORCHSCRIPT, ServingOptions(fp16_input=True))
    assert ts.input[0].data_type == ts.output[0].data_type == ts.output[1].data_type == mc.TYPE_FP16


@pytest.mark.parametrize("fmt", list(Format))
def test_image_pipeline_exposes_the_logits_and_the_features(fmt):
    spec = ModelSpec()
    config = parse_pbtxt(to_pbtxt(build_ensemble_config(spec, fmt, ServingOptions())))
    assert [(o.name, list(o.dims)) for o in config.output] == [("OUTPUT__0", [1000]), ("FEATURES__1", [2048])]
    assert config.output[0].label_filename == "labels.txt" and not config.output[1].label_filename
    _, classify = config.ensemble_scheduling.step
    assert classify.model_name == spec.model_name(fmt)
    assert dict(classify.output_map) == {"OUTPUT__0": "OUTPUT__0", "FEATURES__1": "FEATURES__1"}
    assert config.parameters["labels_sha256"].string_value == labels_digest(spec.labels())


def test_a_fine_tuned_variant_declares_its_classes_features_and_label_digest(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"part {i}\n" for i in range(10)))
    spec = ModelSpec(variant="resnext50_32x4d", num_classes=10, labels_path=labels)
    config = build_config(spec, Format.ONNX, ServingOptions())
    assert config.name == "resnext50_32x4d_onnx"
    assert [(o.name, list(o.dims)) for o in config.output] == [("OUTPUT__0", [10]), ("FEATURES__1", [2048])]
    digest = config.parameters["labels_sha256"].string_value
    assert digest == labels_digest([f"part {i}" for i in range(10)]) != labels_digest(ModelSpec().labels())
    model_dir = write_configs(tmp_path / "repo", spec, Format.ONNX, ServingOptions())
    import hashlib

    assert hashlib.sha256((model_dir / "labels.txt").read_bytes()).hexdigest() == digest  # the served file's hash


def test_options_validation():
    with pytest.raises(ValueError, match="max_batch_size"):
        ServingOptions(max_batch_size=0)
    with pytest.raises(ValueError, match=r"outside 1\.\.8"):
        ServingOptions(max_batch_size=8, preferred_batch_sizes=(4, 16))


def test_typo_is_rejected_by_schema():
    with pytest.raises(text_format.ParseError):
        parse_pbtxt('name: "x"\nmax_batch_sise: 8\n')


COMMITTED_FORMATS = (Format.TORCHSCRIPT, Format.ONNX, Format.TENSORRT)
"""The formats whose configs are committed: the ones deploy.sh and the docker export job build by
default. The INT8 configs are written when those formats are exported, so that no config without a
version stands in the repository (Triton does not start with one)."""


def test_committed_configs_have_not_drifted(tmp_path):
    spec = ModelSpec()
    for fmt in COMMITTED_FORMATS:
        write_configs(tmp_path, spec, fmt, ServingOptions())
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.pbtxt"))
    committed = sorted(p.relative_to(COMMITTED) for p in COMMITTED.rglob("*.pbtxt"))
    assert generated == committed
    for rel in generated:
        assert (COMMITTED / rel).read_text() == (tmp_path / rel).read_text(), (
            f"{rel} drifted: run `python export/export.py --configs-only --formats torchscript,onnx,tensorrt`"
        )
    assert not (tmp_path / spec.model_name(Format.TENSORRT) / CPU_CONFIG).exists()
    write_configs(tmp_path, spec, Format.TENSORRT_INT8, ServingOptions())
    assert not (tmp_path / spec.model_name(Format.TENSORRT_INT8) / CPU_CONFIG).exists()


def test_cuda_graphs_cover_every_batch_size_up_to_the_max():
    """Finding 10 of the GPU-host review: graphs for {1, max} alone leave dynamic batches without one."""
    config = build_config(ModelSpec(), Format.TENSORRT, ServingOptions(max_batch_size=64))
    ranges = {}
    for graph in config.optimization.cuda.graph_spec:
        lower = graph.graph_lower_bound.batch_size or graph.batch_size
        ranges[graph.batch_size] = lower
        assert list(graph.input["INPUT__0"].dim) == [3, 224, 224]
    covered = {n for size, lower in ranges.items() for n in range(lower, size + 1)}
    assert covered == set(range(1, 65)) and 1 in ranges and 64 in ranges
    assert graph_batch_sizes(12)[-1] == (12, 9)
    off = build_config(ModelSpec(), Format.TENSORRT, ServingOptions(cuda_graphs=False))
    assert not off.optimization.cuda.graphs and not off.optimization.cuda.graph_spec


def test_ort_tensorrt_accelerator_has_profiles_and_a_writable_engine_cache():
    config = build_config(ModelSpec(), Format.ONNX, ServingOptions(ort_tensorrt_fp16=True, max_batch_size=16))
    (accel,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    params = dict(accel.parameters)
    assert params["trt_profile_min_shapes"] == "INPUT__0:1x3x224x224"
    assert params["trt_profile_opt_shapes"] == "INPUT__0:8x3x224x224"
    assert params["trt_profile_max_shapes"] == "INPUT__0:16x3x224x224"
    assert params["trt_engine_cache_enable"] == "true"
    assert params["trt_engine_cache_path"].startswith("/tmp/") and "/models" not in params["trt_engine_cache_path"]
