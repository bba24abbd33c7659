"""A CPU stand-in for Triton's native ``onnxruntime`` backend, as a Python-based backend.

Placed at ``<backend-dir>/onnxruntime/model.py`` (with ``_resnext_standin.py`` beside it) this file
serves every model whose config says ``backend: "onnxruntime"``. The shared base reads the config,
checks the requests and batches them; this file only loads the model into an ONNX Runtime session
and runs it: ONE session call per batch of requests.

This file runs inside Triton's Python stub: it imports nothing from the ``resnext_triton`` package.
"""

from __future__ import annotations

import numpy as np
from _resnext_standin import StandinModel


class TritonPythonModel(StandinModel):
    """Runs an ONNX model with ONNX Runtime on the CPU, one session call per batch of requests."""

    runtime = "ONNX Runtime"
    default_filename = "model.onnx"

    def import_runtime(self) -> None:
        import onnxruntime

        self.ort = onnxruntime

    def load(self, path: str, intra: int, inter: int) -> str:
        ort = self.ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra
        options.inter_op_num_threads = inter
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return f"ONNX Runtime {ort.__version__}"

    def missing_tensors(self) -> list[str]:
        session_inputs = {i.name for i in self.session.get_inputs()}
        session_outputs = {o.name for o in self.session.get_outputs()}
        return [n for n, _, _ in self.inputs if n not in session_inputs] + [
            n for n, _ in self.outputs if n not in session_outputs
        ]

    def infer(self, feed: list[np.ndarray]) -> list[np.ndarray]:
        names = [name for name, _ in self.outputs]
        return self.session.run(names, {name: array for (name, _, _), array in zip(self.inputs, feed, strict=True)})

    def finalize(self) -> None:
        self.session = None
