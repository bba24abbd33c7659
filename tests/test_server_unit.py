"""The local Triton launcher without starting Triton: installation, command line, ports, state, errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton import local as srv
from resnext_triton.triton.config import ServingOptions
from resnext_triton.triton.local import errors, launch
from resnext_triton.triton.local import install as triton_install
from resnext_triton.triton.repository import write_configs


def fake_repo(root: Path, formats=(Format.TORCHSCRIPT, Format.ONNX, Format.TENSORRT), *, versions=True) -> Path:
    """A repository with real configs and empty version directories (enough for everything before launch)."""
    spec = ModelSpec()
    for fmt in formats:
        model_dir = write_configs(root, spec, fmt, ServingOptions())
        if versions:
            (model_dir / "1").mkdir()
    return root


@pytest.fixture
def listener():
    """A socket listening on a loopback port (the port is busy while the test runs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_finds_the_wheel_installation_and_its_stub():
    install = srv.find_installation()
    assert install.binary.name == "tritonserver" and os.access(install.binary, os.X_OK)
    assert (install.python_backend / "libtriton_python.so").is_file()
    assert install.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    env = srv.server_env(install, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/x"})
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert env["LD_LIBRARY_PATH"].split(":") == [str(install.lib_dir), "/opt/x"]
    srv.check_dependencies(install, srv.server_env(install))  # libpython is installed here


def test_missing_libpython_is_a_clear_dependency_error(monkeypatch):
    install = srv.find_installation()
    monkeypatch.setattr(triton_install, "missing_libraries", lambda binary, env: ["libpython3.11.so.1.0"])
    with pytest.raises(srv.DependencyError, match=r"libpython3\.11\.so\.1\.0.*apt-get install libpython"):
        srv.check_dependencies(install, {})


def test_missing_wheel_is_a_clear_dependency_error(monkeypatch):
    monkeypatch.setattr(triton_install.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(srv.DependencyError, match="nvidia-pytriton"):
        srv.find_installation()


def test_backend_directory_holds_python_backend_stub_and_standins(tmp_path):
    install = srv.find_installation()
    backends = srv.prepare_backends(tmp_path, install)
    assert (backends / "python" / "libtriton_python.so").is_file()
    assert (backends / "python" / "triton_python_backend_utils.py").is_file()
    stub = backends / "python" / "triton_python_backend_stub"
    assert os.access(stub, os.X_OK) and stub.stat().st_size == install.stub.stat().st_size
    for name in ("onnxruntime", "pytorch"):
        assert "class TritonPythonModel" in (backends / name / "model.py").read_text()
        assert "class StandinModel" in (backends / name / "_resnext_standin.py").read_text()  # the shared base
    assert srv.prepare_backends(tmp_path, install) == backends  # idempotent


def test_command_line_binds_loopback_polls_the_serving_view_and_holds_no_secret(tmp_path):
    install = srv.find_installation()
    config = srv.ServerConfig(repo=tmp_path, state_dir=tmp_path, http_port=9000, grpc_port=9001, metrics_port=9002)
    cmd = srv.build_command(config, install, tmp_path / "b", tmp_path / "serving", "resnext-triton-abc")
    assert cmd[0] == str(install.binary)
    for flag in (
        "--id=resnext-triton-abc",
        f"--model-repository={tmp_path / 'serving'}",
        "--model-config-name=cpu",
        "--model-control-mode=poll",
        "--repository-poll-secs=2",
        f"--backend-directory={tmp_path / 'b'}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        "--http-port=9000",
        "--grpc-port=9001",
        "--metrics-port=9002",
        "--strict-readiness=true",
    ):
        assert flag in cmd
    # poll mode refuses load/unload: nothing on the command line grants anything (ps shows it to everyone)
    assert not [c for c in cmd if "restricted" in c or "token" in c or "--load-model" in c or "reuse" in c]
    # every flag exists in this tritonserver (its --help lists them)
    help_text = subprocess.run(
        [str(install.binary), "--help"], env=srv.server_env(install), capture_output=True, text=True, check=False
    )
    for flag in cmd[1:]:
        assert flag.split("=")[0] in help_text.stdout + help_text.stderr, flag


def test_config_validation_free_ports_and_json_round_trip(tmp_path):
    with pytest.raises(ValueError, match="must differ"):
        srv.ServerConfig(http_port=8000, grpc_port=8000)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        srv.ServerConfig(http_port=70000)
    config = srv.ServerConfig(http_port=0, grpc_port=0, metrics_port=0).with_free_ports()
    ports = {config.http_port, config.grpc_port, config.metrics_port}
    assert len(ports) == 3 and 0 not in ports
    config = srv.ServerConfig(repo=tmp_path / "r", state_dir=tmp_path / "s", models=("a", "b"), extra_args=("--x",))
    assert srv.ServerConfig.from_json(config.to_json()) == config


def test_an_address_of_another_host_is_not_reported_as_a_busy_port(tmp_path):
    config = srv.ServerConfig(
        repo=fake_repo(tmp_path / "repo"), state_dir=tmp_path / "state", host="192.0.2.1",  # TEST-NET-1
        http_port=0, grpc_port=0, metrics_port=0,
    )  # fmt: skip
    with pytest.raises(srv.AddressError, match=r"cannot listen on 192\.0\.2\.1 \(Cannot assign requested address\)"):
        srv.start(config)
    assert not (tmp_path / "state" / srv.STATE_FILE).exists()


def test_busy_port_fails_before_launch(tmp_path, listener):
    config = srv.ServerConfig(
        repo=fake_repo(tmp_path / "repo"), state_dir=tmp_path / "state", http_port=listener, grpc_port=0, metrics_port=0
    )
    with pytest.raises(srv.PortInUseError, match=rf"port in use on 127\.0\.0\.1: HTTP port {listener} \(--http-port\)"):
        srv.start(config)
    assert not (tmp_path / "state" / srv.STATE_FILE).exists() and not (tmp_path / "state" / srv.LOG_FILE).exists()


def test_repository_without_cpu_models_is_refused(tmp_path):
    repo = fake_repo(tmp_path / "repo", formats=(Format.TENSORRT,))
    with pytest.raises(srv.NoModelsError, match="TensorRT plan needs a GPU"):
        srv.start(srv.ServerConfig(repo=repo, state_dir=tmp_path / "state"))
    unexported = fake_repo(tmp_path / "repo2", formats=(Format.ONNX,), versions=False)
    with pytest.raises(srv.NoModelsError, match="no exported version"):
        srv.start(srv.ServerConfig(repo=unexported, state_dir=tmp_path / "state"))
    with pytest.raises(srv.NoModelsError, match="does not exist"):
        srv.start(srv.ServerConfig(repo=tmp_path / "nowhere", state_dir=tmp_path / "state"))


def test_model_selection_skips_tensorrt_and_unknown_names(tmp_path, caplog):
    repo = fake_repo(tmp_path / "repo")
    config = srv.ServerConfig(repo=repo, state_dir=tmp_path)
    with caplog.at_level("INFO", logger="resnext_triton.triton.local"):
        load, skipped = launch.choose_models(config)
    # the classifiers, their image pipelines and the shared preprocessing step
    assert load == [
        "resnext101_32x4d_onnx",
        "resnext101_32x4d_onnx_image",
        "resnext101_32x4d_preprocess",
        "resnext101_32x4d_torchscript",
        "resnext101_32x4d_torchscript_image",
    ]
    assert list(skipped) == ["resnext101_32x4d_tensorrt_fp16", "resnext101_32x4d_tensorrt_fp16_image"]
    assert "not loading resnext101_32x4d_tensorrt_fp16: TensorRT plan needs a GPU" in caplog.text
    only = srv.ServerConfig(repo=repo, state_dir=tmp_path, models=("resnext101_32x4d_onnx",))
    assert launch.choose_models(only)[0] == ["resnext101_32x4d_onnx"]
    pipeline = srv.ServerConfig(repo=repo, state_dir=tmp_path, models=("resnext101_32x4d_onnx_image",))
    assert launch.choose_models(pipeline)[0] == [  # an image pipeline brings the models it runs
        "resnext101_32x4d_onnx",
        "resnext101_32x4d_onnx_image",
        "resnext101_32x4d_preprocess",
    ]
    with pytest.raises(srv.NoModelsError, match="nope: not in the repository"):
        launch.choose_models(srv.ServerConfig(repo=repo, state_dir=tmp_path, models=("nope",)))


def test_log_of_a_failed_load_names_the_model(tmp_path):
    log = tmp_path / "triton.log"
    log.write_text(
        'I1123 12:21:21 1 model_lifecycle.cc:472] "loading: m_onnx:1"\n'
        "E1123 12:21:21 1 model_lifecycle.cc:642] \"failed to load 'm_onnx' version 1: Internal: "
        'TritonModelException: m_onnx: cannot load /r/m_onnx/1/model.onnx: INVALID_PROTOBUF\\n\\nAt:\\n  x"\n'
        "error: creating server: Invalid argument - load failed for model 'm_onnx'\n"
    )
    error = errors.failure_from_log(log, ["m_onnx", "m_ts"])
    assert isinstance(error, srv.ModelLoadError)
    assert error.failures == {
        "m_onnx": "Internal: TritonModelException: m_onnx: cannot load /r/m_onnx/1/model.onnx: INVALID_PROTOBUF"
    }
    assert "model failed to load: m_onnx" in str(error) and "creating server" in error.log_tail
    log.write_text("error: creating server: Internal - bad things\n")
    other = errors.failure_from_log(log, ["m_onnx"])
    assert type(other) is srv.ServerExitedError and "bad things" in str(other)
    # a second server on the same ports: Triton binds only after loading its models
    log.write_text(
        'E1125 08:42:47.877934 1433 main.cc:245] "failed to start GRPC service: Unavailable - '
        "Socket '127.0.0.1:19501' already in use \"\n"
    )
    busy = errors.failure_from_log(log, ["m_onnx"])
    assert type(busy) is srv.PortInUseError and "Socket '127.0.0.1:19501' already in use" in str(busy)


def test_a_state_whose_supervisor_is_gone_is_not_running(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = srv.ServerState(
        pid=dead.pid, host="127.0.0.1", http_port=1, grpc_port=2, metrics_port=3, repo="r",
        log_file=str(tmp_path / "log"), state_dir=str(tmp_path), started_at=0.0, supervisor_pid=dead.pid,
        restarts=2, regions=["triton_python_backend_shm_region_x"],
    )  # fmt: skip
    state.save()
    assert srv.ServerState.load(tmp_path) == state
    assert srv.running_state(tmp_path) is None
    # a live process that is not a supervisor (a reused pid) does not count either
    state = replace(state, supervisor_pid=os.getpid())
    state.save()
    assert srv.running_state(tmp_path) is None
    result = srv.stop(tmp_path)
    assert result.state is None and not (tmp_path / srv.STATE_FILE).exists()


def test_urls_for_wildcard_and_ipv6_binds():
    base = dict(pid=1, http_port=8000, grpc_port=8001, metrics_port=8002, repo="", log_file="", state_dir="",
                started_at=0.0)  # fmt: skip
    assert srv.ServerState(host="0.0.0.0", **base).http_url == "http://127.0.0.1:8000"
    assert srv.ServerState(host="::1", **base).grpc_url == "[::1]:8001"
    assert srv.ServerState(host="127.0.0.1", **base).metrics_url == "http://127.0.0.1:8002/metrics"


def test_cli_without_a_server(tmp_path, capsys):
    assert srv.main(["--state-dir", str(tmp_path), "status"]) == srv.EXIT_NOT_RUNNING
    assert "not running" in capsys.readouterr().out
    assert srv.main(["--state-dir", str(tmp_path), "status", "--json"]) == srv.EXIT_NOT_RUNNING
    assert json.loads(capsys.readouterr().out)["running"] is False
    assert srv.main(["--state-dir", str(tmp_path), "stop"]) == 0
    assert srv.main(["--state-dir", str(tmp_path), "logs"]) == 1
    assert "never started" in capsys.readouterr().err
    code = srv.main(["--state-dir", str(tmp_path), "start", "--model-repository", str(tmp_path / "none")])
    assert code == 1 and "does not exist" in capsys.readouterr().err


def test_cli_busy_port_message(tmp_path, listener, capsys):
    repo = fake_repo(tmp_path / "repo")
    argv = ["--state-dir", str(tmp_path / "s"), "start", "--model-repository", str(repo)]
    argv += ["--http-port", "0", "--grpc-port", str(listener), "--metrics-port", "0"]
    assert srv.main(argv) == 1
    assert f"gRPC port {listener} (--grpc-port)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["--http-port", "99999"], ["--grpc-port", "-1"], ["--timeout", "0"], ["--timeout", "soon"]],
    ids=["port-too-big", "negative-port", "zero-timeout", "not-a-number"],
)
def test_cli_usage_errors_exit_2(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as exited:
        srv.main(["--state-dir", str(tmp_path), "start", *argv])
    assert exited.value.code == srv.EXIT_USAGE
    assert "error: argument" in capsys.readouterr().err


def test_parser_documents_defaults():
    text = srv.build_parser().format_help()
    assert "RESNEXT_TRITON_STATE_DIR" in text
    start_help = srv.build_parser()._subparsers._group_actions[0].choices["start"].format_help()
    for option in ("--model-repository", "--host", "--http-port", "--grpc-port", "--metrics-port", "--timeout"):
        assert option in start_help


def test_module_runs_as_a_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "resnext_triton.triton.local", "--state-dir", str(tmp_path), "status"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == srv.EXIT_NOT_RUNNING and "Triton is not running" in proc.stdout
