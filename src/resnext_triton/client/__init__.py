"""The Triton client: preprocessing, inputs, the classifier and the ``classify`` command line.

Depends on numpy, Pillow, tritonclient and tqdm only; it never imports torch.

Example::

    from resnext_triton.client import TritonClassifier

    with TritonClassifier("127.0.0.1:8001", "grpc") as clf:
        for result in clf.classify(["photo.jpg"], top_k=5):
            print(result.to_dict())
"""

from resnext_triton.client.classifier import TritonClassifier
from resnext_triton.client.discovery import ModelInfo
from resnext_triton.client.errors import (
    ClientError,
    FetchError,
    InferenceError,
    InputError,
    ModelNotReady,
    PreprocessError,
    ServerUnavailable,
)
from resnext_triton.client.inputs import Source, expand_inputs
from resnext_triton.client.results import ClassificationResult, Prediction
from resnext_triton.preprocess import preprocess_image, preprocess_path

__all__ = [
    "ClassificationResult",
    "ClientError",
    "FetchError",
    "InferenceError",
    "InputError",
    "ModelInfo",
    "ModelNotReady",
    "Prediction",
    "PreprocessError",
    "ServerUnavailable",
    "Source",
    "TritonClassifier",
    "expand_inputs",
    "preprocess_image",
    "preprocess_path",
]
