"""Triton Python model: encoded image files in, the classifier's input tensor out.

It decodes and preprocesses with :mod:`resnext_triton.preprocess`, the module the client uses, so
the server's pixels are the client's by construction. The preprocessing parameters come from this
model's own ``config.pbtxt`` (written from the model's spec by the exporter); a config without them
falls back to the default spec with a warning.

Every request the dynamic batcher hands :meth:`TritonPythonModel.execute` is decoded in parallel in
a thread pool (Pillow releases the GIL while decoding and resizing). A request whose image is bad
(empty, truncated, not an image, a decompression bomb beyond the pixel limit) gets its own error
response; the other requests of the batch succeed.

Runs inside Triton's Python stub: it needs numpy, Pillow and the ``resnext_triton`` package (the
local launcher's virtualenv, or the serving image of docker-compose.yml).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from resnext_triton.preprocess import DEFAULT_MAX_PIXELS, PreprocessError, preprocess_bytes
from resnext_triton.spec import Preprocessing

NUMPY2 = int(np.__version__.split(".")[0]) >= 2


class TritonPythonModel:
    """Encoded bytes (UINT8 [batch, bytes]) → float32 and float16 pixels (batch, 3, crop, crop)."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.name = args.get("model_name", config.get("name", "preprocess"))
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        try:
            pre = Preprocessing.from_parameters(params)
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{self.name}: {exc}") from None
        if pre is None:
            pb_utils.Logger.log_warn(f"{self.name}: no preprocessing parameters in the config; using the default spec")
            pre = Preprocessing()
        self.pre = pre
        self.max_pixels = int(params.get("max_pixels") or DEFAULT_MAX_PIXELS)
        threads = int(params.get("threads") or 0) or len(os.sched_getaffinity(0))
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="preprocess")
        self.torch = None
        if NUMPY2:  # this Triton's stub predates numpy 2: outputs go over DLPack as torch tensors
            import torch

            self.torch = torch
        pb_utils.Logger.log_info(f"{self.name}: {pre} with {threads} decoding thread(s)")

    def _read(self, request: object) -> list[bytes]:
        tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
        array = np.from_dlpack(tensor) if NUMPY2 else tensor.as_numpy()
        if array.ndim != 2:
            raise PreprocessError(f"IMAGE must be [batch, bytes], got shape {list(array.shape)}")
        return [row.tobytes() for row in array]

    def _one(self, data: bytes) -> np.ndarray:
        if not data:
            raise PreprocessError("empty file (0 bytes)")
        return preprocess_bytes(data, self.pre, max_pixels=self.max_pixels)

    def _tensor(self, name: str, array: np.ndarray) -> object:
        if self.torch is None:
            return pb_utils.Tensor(name, array)
        return pb_utils.Tensor.from_dlpack(name, self.torch.from_numpy(array))

    def execute(self, requests: list) -> list:
        jobs: list = []
        for request in requests:
            try:
                jobs.append([self.pool.submit(self._one, data) for data in self._read(request)])
            except PreprocessError as exc:
                jobs.append(exc)
        responses = []
        for request, job in zip(requests, jobs, strict=True):
            try:
                if isinstance(job, Exception):
                    raise job
                pixels = np.stack([future.result() for future in job])
            except PreprocessError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}")))
                continue
            except Exception as exc:  # a decoder failure Pillow does not classify is still this request's alone
                error = pb_utils.TritonError(f"{self.name}: cannot process image: {type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            wanted = set(request.requested_output_names() or ("PIXELS", "PIXELS_FP16"))
            outputs = []
            if "PIXELS" in wanted:
                outputs.append(self._tensor("PIXELS", pixels))
            if "PIXELS_FP16" in wanted:
                outputs.append(self._tensor("PIXELS_FP16", pixels.astype(np.float16)))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
