"""The demo page's logic without a Triton server: parser, messages, an unreachable server, the layout."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from resnext_triton.client import Prediction, ServerUnavailable
from resnext_triton.demo import Answer, DemoService, Problem, ServedModel
from resnext_triton.demo.cli import DEFAULT_BIND, DEFAULT_PORT, build_parser
from resnext_triton.demo.service import model_rank, parse_model_name, precision_of
from resnext_triton.spec import Format

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "demo" / "app.py"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def dead_address() -> str:
    """A 127.0.0.1 port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def predictions(*probabilities: float) -> tuple[Prediction, ...]:
    return tuple(
        Prediction(rank=i, class_id=i, label=f"n0000000{i} label {i}", probability=p, logit=float(-i))
        for i, p in enumerate(probabilities, start=1)
    )


# ------------------------------------------------------------------------------ command line


def test_parser_defaults_serve_127_0_0_1_on_7860_over_grpc():
    args = build_parser().parse_args([])
    assert (args.port, args.bind, args.protocol, args.url, args.model) == (
        DEFAULT_PORT,
        DEFAULT_BIND,
        "grpc",
        None,
        None,
    )
    assert (DEFAULT_PORT, DEFAULT_BIND) == (7860, "127.0.0.1")
    args = build_parser().parse_args(["--port", "8123", "-u", "triton:9001", "-i", "http", "-m", "m", "--timeout", "1"])
    assert (args.port, args.url, args.protocol, args.model, args.timeout) == (8123, "triton:9001", "http", "m", 1.0)


@pytest.mark.parametrize("argv", [["-i", "rest"], ["--port", "0"], ["--port", "70000"], ["--timeout", "0"]])
def test_parser_refuses_bad_values(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_the_launcher_is_thin_and_runs_from_a_checkout():
    result = subprocess.run([sys.executable, str(APP), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--port", "--bind", "--url", "--protocol", "--model", "--timeout"):
        assert option in result.stdout
    source = APP.read_text()
    assert "from resnext_triton.demo.cli import build_parser, main" in source
    assert len(source.splitlines()) < 30


def test_readme_demo_section_uses_real_options():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Demo page: `python demo/app.py`", 1)[1].split("\n## ", 1)[0]
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", section)) - {"--weights", "--local"}
    known = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", build_parser().format_help()))
    assert used and used <= known, used - known
    assert "docs/demo.png" in section and "tests/integration/test_demo.py" in section
    assert readme.index("## Demo page") < readme.index("## Benchmarks")


def test_demo_pins_and_system_packages():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {r.split("==")[0] for r in extras["demo"]} == {"gradio", "gradio_client"}
    assert all("==" in r for r in extras["demo"])
    assert "resnext-triton[export,bench,demo]" in extras["dev"]
    assert any(re.fullmatch(r"selenium==[\d.]+", r) for r in extras["dev"])
    assert {"chromium", "chromium-driver"} <= set(PYPROJECT["tool"]["resnext-triton"]["apt"])


# ------------------------------------------------------------------------------ service


def test_served_model_titles_name_format_and_precision():
    assert ServedModel("resnext101_32x4d_onnx", Format.ONNX, "FP32").title == "ONNX FP32"
    assert ServedModel("resnext101_32x4d_torchscript", Format.TORCHSCRIPT, "FP16").title == "TorchScript FP16"
    assert ServedModel("resnext101_32x4d_onnx_int8", Format.ONNX_INT8, "INT8").title == "ONNX INT8"
    pipeline = ServedModel("resnext101_32x4d_onnx_image", Format.ONNX, "FP32", pipeline=True)
    assert pipeline.title == "ONNX FP32 pipeline"
    trt = ServedModel("resnext101_32x4d_tensorrt_fp16", Format.TENSORRT, "FP16")
    assert trt.choice == "TensorRT FP16 · resnext101_32x4d_tensorrt_fp16"
    assert ServedModel("m_tensorrt_int8", Format.TENSORRT_INT8, "INT8").title == "TensorRT INT8"


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("resnext101_32x4d_onnx", (Format.ONNX, False)),
        ("resnext101_32x4d_onnx_int8", (Format.ONNX_INT8, False)),
        ("resnext101_32x4d_onnx_int8_image", (Format.ONNX_INT8, True)),
        ("resnext101_32x4d_torchscript_image", (Format.TORCHSCRIPT, True)),
        ("resnext101_32x4d_tensorrt_fp16", (Format.TENSORRT, False)),
        ("resnext101_32x4d_tensorrt_int8_image", (Format.TENSORRT_INT8, True)),
        ("resnext101_32x4d_preprocess", (None, False)),
    ],
)
def test_model_names_give_format_and_pipeline(name, parsed):
    assert parse_model_name(name) == parsed


def test_precision_and_dropdown_order():
    assert precision_of(Format.TENSORRT, "FP32") == "FP16"
    assert precision_of(Format.ONNX_INT8, "FP32") == "INT8"
    assert precision_of(Format.TENSORRT_INT8, "FP32") == "INT8"
    assert precision_of(Format.TORCHSCRIPT, "FP16") == "FP16"
    assert precision_of(Format.ONNX, "UINT8") == ""  # a pipeline's input says nothing about the model
    names = ["m_onnx_image", "m_onnx_int8", "m_torchscript", "m_tensorrt_fp16", "m_onnx"]
    assert sorted(names, key=model_rank) == [
        "m_onnx",
        "m_torchscript",
        "m_tensorrt_fp16",
        "m_onnx_int8",
        "m_onnx_image",
    ]


def test_an_answer_gives_the_bar_chart_and_who_answered_how_fast():
    answer = Answer(
        "cat.png",
        model="resnext101_32x4d_onnx",
        model_title="ONNX FP32",
        predictions=predictions(0.5, 0.25),
        elapsed_ms=41.6,
    )
    assert answer.ok
    assert answer.confidences == {"n00000001 label 1": 0.5, "n00000002 label 2": 0.25}
    assert list(answer.confidences) == ["n00000001 label 1", "n00000002 label 2"]
    assert answer.message == "**resnext101_32x4d_onnx** (ONNX FP32) answered in **42 ms** · top-1 probability 50.00 %"


def test_a_problem_is_one_readable_line():
    answer = Answer("notes.txt", problem=Problem.INPUT, detail="`notes.txt`: not an image (Pillow cannot identify it)")
    assert not answer.ok and answer.confidences == {}
    assert answer.message == "**Cannot classify this file**: `notes.txt`: not an image (Pillow cannot identify it)"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_unreachable_triton_becomes_a_message_within_the_timeout(protocol, photos):
    service = DemoService(dead_address(), protocol, timeout_s=0.5)
    try:
        started = time.monotonic()
        answer = service.classify(photos[0], "resnext101_32x4d_onnx")
        assert time.monotonic() - started < 10
        assert answer.problem is Problem.UNREACHABLE
        assert answer.message.startswith("**Triton is unreachable**: ")
        assert service.url in answer.message and "./deploy.sh" in answer.message
        with pytest.raises(ServerUnavailable):
            service.served_models()
    finally:
        service.close()


def test_a_bad_protocol_is_refused_at_once():
    with pytest.raises(ValueError, match="unknown protocol"):
        DemoService("127.0.0.1:8001", "rest")


def test_the_service_imports_neither_gradio_nor_torch():
    code = (
        "import sys, resnext_triton.demo, resnext_triton.demo.cli; "
        "bad = [m for m in ('torch', 'gradio') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ page


@pytest.fixture(scope="module")
def page_module():
    pytest.importorskip("gradio", reason="needs gradio (the demo extra)")
    from resnext_triton.demo import page

    return page


def test_the_page_does_not_import_torch():
    pytest.importorskip("gradio", reason="needs gradio (the demo extra)")
    code = "import sys, resnext_triton.demo.page; print('torch' in sys.modules); sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_page_has_its_parts_and_no_analytics(page_module, photos):
    service = DemoService(dead_address(), "grpc", timeout_s=0.5)
    page = page_module.build_page(service, photos)
    config = page.get_config_file()
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"model", "refresh", "server-status", "upload", "samples", "photo", "answer", "top5"} <= ids
    assert page.analytics_enabled is False
    apis = {d.get("api_name") for d in config["dependencies"] if d.get("api_visibility", "public") == "public"}
    assert {"classify", "models"} <= apis
    service.close()


def test_page_handlers_turn_failures_into_messages(page_module, photos, tmp_path):
    service = DemoService(dead_address(), "grpc", timeout_s=0.5)
    try:
        dropdown, status = page_module.refresh_models(service, None)
        assert status.startswith("**Triton is unreachable** at ")
        assert dropdown.choices == [] and dropdown.value is None
        assert page_module.classify_photo(service, None, None) == (None, None, None, page_module.NO_PHOTO)
        state, shown, top5, message = page_module.classify_photo(service, str(photos[0]), None)
        assert (state, shown, top5) == (str(photos[0]), None, None)
        assert message.startswith("**Triton is unreachable**")
    finally:
        service.close()


def test_the_photo_is_shown_upright_and_small(page_module, photos, tmp_path):
    img = page_module.display_image(str(photos[0]))
    assert img is not None and img.mode == "RGB" and max(img.size) <= page_module.DISPLAY_SIZE
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    assert page_module.display_image(str(notes)) is None
