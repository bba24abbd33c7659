"""A real local Triton (pip-installed, CPU stand-in backends) over the session's exported repository."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resnext_triton.spec import Format, ModelSpec
from resnext_triton.triton.local import LocalTriton, ServerConfig, ServerError
from resnext_triton.triton.repository import servable_models

SERVED_FORMATS = (Format.TORCHSCRIPT, Format.ONNX)


@dataclass
class TritonServer:
    """What tests need to talk to the session's server."""

    http_url: str  # http://127.0.0.1:PORT
    grpc_url: str  # 127.0.0.1:PORT (tritonclient.grpc form)
    metrics_url: str
    repo: Path
    spec: ModelSpec
    models: dict[Format, str]
    served: list[str]  # every model loaded: classifiers, their image pipelines, the preprocessing step
    triton: LocalTriton

    @property
    def http_address(self) -> str:
        """127.0.0.1:PORT (tritonclient.http form)."""
        return self.http_url.removeprefix("http://")

    @property
    def config(self) -> ServerConfig:
        return self.triton.config


@pytest.fixture(scope="session")
def triton_server(exported_repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Triton on free 127.0.0.1 ports serving the exported TorchScript and ONNX models; always torn down."""
    config = ServerConfig(
        repo=exported_repo.path,
        state_dir=tmp_path_factory.mktemp("triton_state"),
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        timeout_s=600,
    )
    triton = LocalTriton(config)
    try:
        triton.start()
    except ServerError as exc:
        pytest.fail(f"the local Triton did not start: {exc}\n--- Triton log ---\n{exc.log_tail}")
    try:
        spec = exported_repo.spec
        yield TritonServer(
            http_url=triton.http_url,
            grpc_url=triton.grpc_url,
            metrics_url=triton.metrics_url,
            repo=exported_repo.path,
            spec=spec,
            models={fmt: spec.model_name(fmt) for fmt in SERVED_FORMATS},
            served=servable_models(exported_repo.path, cpu=True)[0],
            triton=triton,
        )
    finally:
        triton.stop()
