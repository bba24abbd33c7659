"""Client preprocessing throughput: the client's threaded decode stage against one thread.

The threaded side is the decode stage of :meth:`resnext_triton.client.TritonClassifier.classify_iter`
built from the same public pieces: a ``ThreadPoolExecutor`` of ``workers`` threads running
:func:`~resnext_triton.client.inputs.load_source` then
:func:`~resnext_triton.preprocess.preprocess_image`, results handed out in input order by
:func:`~resnext_triton.client.pipeline.ordered_map`. The single-threaded reference calls the same
two functions in a plain loop; the hub reference is the torch.hub example's transforms
(:func:`resnext_triton.bench.baselines.hub_prepare_input`). Outputs must be identical.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnext_triton.spec import Preprocessing


@dataclass(frozen=True)
class PreprocessTiming:
    """Images/s of one preprocessing method and whether its output matched the reference bit for bit."""

    name: str
    images: int
    seconds: float
    workers: int
    identical: bool | None = None

    @property
    def throughput(self) -> float:
        """Images per second."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"name": self.name, "images": self.images, "seconds": self.seconds, "workers": self.workers,
                "identical": self.identical, "throughput": self.throughput}


def default_workers() -> int:
    """The client's default number of decode threads: the CPU count, at most 8."""
    return min(8, os.cpu_count() or 1)


def single_threaded(paths: Sequence[Path], pre: Preprocessing) -> tuple[float, list[np.ndarray]]:
    """Seconds and arrays of the client's load + preprocess functions in one thread."""
    from resnext_triton.client.inputs import Source, load_source
    from resnext_triton.preprocess import preprocess_image

    start = time.perf_counter()
    arrays = [preprocess_image(load_source(Source.file(p)), pre) for p in paths]
    return time.perf_counter() - start, arrays


def threaded(paths: Sequence[Path], pre: Preprocessing, workers: int) -> tuple[float, list[np.ndarray]]:
    """Seconds and arrays of the client's threaded decode stage (pool start-up included)."""
    from resnext_triton.client.inputs import Source, load_source
    from resnext_triton.client.pipeline import ordered_map
    from resnext_triton.preprocess import preprocess_image

    def prepare(source: Source) -> np.ndarray:
        return preprocess_image(load_source(source), pre)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers, thread_name_prefix="bench-decode") as pool:
        sources = (Source.file(p) for p in paths)
        arrays = list(ordered_map(lambda s: pool.submit(prepare, s), sources, window=2 * workers + 8))
    return time.perf_counter() - start, arrays


def hub_reference(paths: Sequence[Path], pre: Preprocessing) -> tuple[float, list[np.ndarray]]:
    """Seconds and arrays of the torch.hub example's transforms in one thread."""
    from resnext_triton.bench.baselines import hub_prepare_input

    start = time.perf_counter()
    arrays = [hub_prepare_input(p, pre).numpy()[0] for p in paths]
    return time.perf_counter() - start, arrays


def _same(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def compare_preprocessing(
    paths: Sequence[Path],
    pre: Preprocessing | None = None,
    *,
    workers: int | None = None,
    repeats: int = 3,
    hub: bool = True,
) -> list[PreprocessTiming]:
    """Time the single-threaded reference, the threaded client stage and (optionally) the hub transforms.

    Each method runs once untimed on a few photos (file cache, imports, thread start-up), then
    ``repeats`` times on all of them, the methods interleaved; the fastest repeat counts.
    ``identical`` compares each output to the single-threaded reference with ``np.array_equal``.
    """
    pre = pre or Preprocessing()
    workers = workers or default_workers()
    warm = list(paths[: min(len(paths), 2 * workers)])
    methods = {
        "ref": lambda p: single_threaded(p, pre),
        "threaded": lambda p: threaded(p, pre, workers),
        **({"hub": lambda p: hub_reference(p, pre)} if hub else {}),
    }
    for run in methods.values():
        run(warm)
    best: dict[str, float] = {}
    outputs: dict[str, list[np.ndarray]] = {}
    for _ in range(max(1, repeats)):
        for key, run in methods.items():
            seconds, arrays = run(paths)
            best[key] = min(best.get(key, float("inf")), seconds)
            outputs.setdefault(key, arrays)
    ref = outputs["ref"]
    timings = [
        PreprocessTiming("single-threaded reference (client functions, 1 thread)", len(paths), best["ref"], 1, True),
        PreprocessTiming(f"client threaded decode stage ({workers} threads)", len(paths), best["threaded"], workers,
                         _same(ref, outputs["threaded"])),
    ]
    if hub:
        timings.append(PreprocessTiming("torch.hub example transforms (PIL + torch, 1 thread)", len(paths),
                                        best["hub"], 1, _same(ref, outputs["hub"])))
    return timings
