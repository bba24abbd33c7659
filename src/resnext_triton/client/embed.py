"""Image embeddings through Triton: the pooled features before ``fc`` of each input.

Every exported model has a second output beside its logits, ``FEATURES__1``: the globally pooled
features of the last stage, before the classifier head (2048 values per image for every ResNeXt
variant here, float32; FP16 for an FP16 TorchScript model, returned as float32). Similar images
have similar features, so cosine similarity over them finds look-alikes (:func:`nearest`).

:class:`TritonEmbedder` is a :class:`~resnext_triton.client.classifier.TritonClassifier` that asks
for that output alone: the same model discovery, threaded preprocessing, batching, time limits and
per-input errors, and the logits stay on the server. Like the rest of the client it never imports
torch.

Example::

    from resnext_triton.client.embed import TritonEmbedder

    with TritonEmbedder("127.0.0.1:8001", "grpc") as embedder:
        for result in embedder.embed(["cat.jpg", "dog.png"]):
            print(result.input, result.error or result.features.shape)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np

from resnext_triton.client.classifier import DEFAULT_CONCURRENCY, InputLike, TritonClassifier
from resnext_triton.client.discovery import ModelInfo
from resnext_triton.client.errors import ModelNotReady
from resnext_triton.client.inference import send_batch
from resnext_triton.client.pipeline import Batch
from resnext_triton.client.transport import InferSession

NAMES_SUFFIX = ".txt"
"""The file beside ``features.npy`` that names its rows, one input per line (``features.txt``)."""


@dataclass(frozen=True)
class EmbeddingResult:
    """One input's features, or why it has none.

    Attributes:
        input: the input as given (a path, a URL, ``<bytes N>``, ``<image N>``).
        features: float32, shape ``(feature width,)``; None on error.
        error: the reason this input failed; None on success.
    """

    input: str
    features: np.ndarray | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the input has its features."""
        return self.error is None


class TritonEmbedder(TritonClassifier):
    """Image embeddings from a ResNeXt model on Triton (its ``FEATURES__1`` output).

    Takes the arguments of :class:`~resnext_triton.client.classifier.TritonClassifier` (URL,
    protocol, model, time limits, ``pipeline`` for the image pipelines, ...) and can classify too.
    """

    def __enter__(self) -> TritonEmbedder:
        return self

    def embed_iter(
        self,
        inputs: Iterable[InputLike],
        *,
        batch_size: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> Iterator[EmbeddingResult]:
        """Embed a stream of inputs, yielding one result per input in input order.

        Args:
            inputs: file paths, http(s) URLs, encoded bytes, PIL images or sources (consumed lazily).
            batch_size: images per request (default: 8, at most the model's max_batch_size).
            concurrency: requests in flight.

        Raises:
            ServerUnavailable: if the server cannot be reached, is lost, or stops answering.
            ModelNotReady: if the model is missing or unusable, or has no features output.
            ClientError: for an invalid batch size or concurrency.
        """
        info = self.model_info
        if info.features_name is None:
            raise ModelNotReady(
                f"model {info.name} has no {self.spec.features_name} output (exported by an older version?): "
                "export it again with export/export.py"
            )
        size = self.resolve_batch_size(batch_size)
        yield from self.stream(inputs, partial(embed_batch, info=info), batch_size=size, concurrency=concurrency)

    def embed(
        self,
        inputs: Iterable[InputLike],
        *,
        batch_size: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> list[EmbeddingResult]:
        """Embed inputs; one result per input, in order (see :meth:`embed_iter`).

        Raises:
            ServerUnavailable: if the server cannot be reached (or is lost during the run).
            ModelNotReady: if the model is missing or unusable, or has no features output.
            ClientError: for an invalid batch size or concurrency.
        """
        return list(self.embed_iter(inputs, batch_size=batch_size, concurrency=concurrency))


def embed_batch(session: InferSession, batch: Batch, *, info: ModelInfo) -> list[EmbeddingResult]:
    """Send one batch asking for the features output alone; one result per entry, in order.

    Raises:
        ServerUnavailable: if the server cannot be reached.
    """
    if info.features_name is None:
        raise ModelNotReady(f"model {info.name} has no features output")
    rows, failure = send_batch(session, batch, info, output_name=info.features_name)
    row = iter(rows)
    results = []
    for entry in batch.entries:
        if entry.array is None:
            results.append(EmbeddingResult(entry.source.name, error=entry.error))
        elif failure is not None:
            results.append(EmbeddingResult(entry.source.name, error=failure))
        else:
            features = np.asarray(next(row), dtype=np.float32)
            if info.feature_dim is not None and features.shape != (info.feature_dim,):
                error = f"unexpected features shape {features.shape} from the server (expected {info.feature_dim})"
                results.append(EmbeddingResult(entry.source.name, error=error))
            else:
                results.append(EmbeddingResult(entry.source.name, features=features))
    return results


def names_path(features_path: str | os.PathLike[str]) -> Path:
    """The names file beside a features file: ``features.npy`` -> ``features.txt``."""
    return Path(features_path).with_suffix(NAMES_SUFFIX)


def save_embeddings(path: str | os.PathLike[str], names: Sequence[str], features: np.ndarray) -> Path:
    """Write ``features`` (float32, one row per name) to ``path`` (``.npy``) and the names beside it.

    Each file is replaced atomically. Returns the names file.

    Raises:
        ValueError: if the path does not end in ``.npy``, the counts differ, or a name holds a line break.
    """
    target = Path(path)
    if target.suffix != ".npy":
        raise ValueError(f"{target}: the features file must end in .npy")
    if len(names) != len(features):
        raise ValueError(f"{len(names)} names for {len(features)} rows of features")
    if any("\n" in name or "\r" in name for name in names):
        raise ValueError("an input name holds a line break; it cannot be written one per line")
    array = np.asarray(features, dtype=np.float32).reshape(len(names), -1)
    _atomic_write(target, lambda f: np.save(f, array))
    listing = names_path(target)
    _atomic_write(listing, lambda f: f.write("".join(f"{name}\n" for name in names).encode("utf-8")))
    return listing


def load_embeddings(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Read what :func:`save_embeddings` wrote: (names, features).

    Raises:
        OSError: if a file cannot be read.
        ValueError: if the two files do not match.
    """
    features = np.load(Path(path), allow_pickle=False)
    names = names_path(path).read_text("utf-8").splitlines()
    if len(names) != len(features):
        raise ValueError(f"{names_path(path)} names {len(names)} inputs, {path} has {len(features)} rows")
    return names, features


def nearest(features: np.ndarray, query: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` rows of ``features`` most similar to ``query`` by cosine similarity, best first.

    Returns:
        (row index, cosine similarity) pairs.
    """
    rows = np.asarray(features, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    scores = rows @ q / np.maximum(np.linalg.norm(rows, axis=1) * np.linalg.norm(q), 1e-30)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order]


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
