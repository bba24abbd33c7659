"""Bounded, ordered streaming stages: decode/preprocess in a thread pool, batch, requests in flight.

Every stage is a generator that pulls from the one before it only as far as its window allows,
so a directory of any size streams through with a bounded number of decoded arrays alive:
at most ``window`` inputs being decoded or waiting, one batch being assembled and
``concurrency`` batches in flight. Results come out in input order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from resnext_triton.client.inputs import Source

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
C = TypeVar("C")


def ordered_map(
    submit: Callable[[T], Future[R]], items: Iterable[T], window: int, *, abort: Future[Any] | None = None
) -> Iterator[R]:
    """The results of ``submit(item)`` for each item, in order, with at most ``window`` outstanding.

    ``submit`` starts the work for one item (e.g. ``lambda x: executor.submit(fn, x)``).

    Items are pulled lazily: the ``window + 1``-th item is not taken from ``items`` before the
    first result has been handed out. When the consumer stops early, pending calls are cancelled.
    While a result is awaited, ``abort`` is watched too: when it fails, its exception is raised
    at once, without waiting for the work in flight.

    Raises:
        ValueError: if ``window`` < 1.
        Exception: whatever the work raised for the result being handed out, or ``abort``'s.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(submit(item))
            while len(pending) >= window or (pending and pending[0].done()):
                yield _result(pending.popleft(), abort)
        while pending:
            yield _result(pending.popleft(), abort)
    finally:
        for future in pending:
            future.cancel()


def _result(future: Future[R], abort: Future[Any] | None) -> R:
    """The future's result; ``abort``'s exception if that fails first."""
    if abort is not None and not future.done():
        wait([future, abort], return_when=FIRST_COMPLETED)
        if not future.done() and abort.done():
            future.cancel()
            raise abort.exception() or RuntimeError("aborted")
    return future.result()


class WorkerPool(Generic[C]):
    """Threads that each hold a per-thread context (e.g. a connection) for the calls they run.

    ``submit(fn, item)`` runs ``fn(context, item)`` on one of the threads. The context comes from
    ``context_factory`` (a context manager), entered when the thread starts and exited on
    :meth:`shutdown`, in the thread that created it.
    """

    def __init__(self, workers: int, context_factory: Callable[[], AbstractContextManager[C]], *, name: str):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[C, Any], Any], Any] | None] = queue.SimpleQueue()
        self._factory = context_factory
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        try:
            with self._factory() as context:
                while (job := self._queue.get()) is not None:
                    future, fn, item = job
                    if not future.set_running_or_notify_cancel():
                        continue
                    try:
                        future.set_result(fn(context, item))
                    except BaseException as exc:  # handed to the consumer through the future
                        future.set_exception(exc)
        except BaseException as exc:  # the context itself failed: fail every job this thread takes
            logger.debug("worker context failed: %s", exc, exc_info=True)
            while (job := self._queue.get()) is not None:
                if job[0].set_running_or_notify_cancel():
                    job[0].set_exception(exc)

    def submit(self, fn: Callable[[C, T], R], item: T) -> Future[R]:
        """Queue ``fn(context, item)``."""
        future: Future[R] = Future()
        self._queue.put((future, fn, item))
        return future

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop the threads after the queued calls (cancelled futures are skipped) and close their contexts."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout_s)


@dataclass(frozen=True)
class Prepared:
    """An input after decoding and preprocessing: its array, or the error that stopped it."""

    source: Source
    array: np.ndarray | None = None
    error: str | None = None


@dataclass(frozen=True)
class Batch:
    """Consecutive inputs, in order; those with an array go to the server in one request."""

    index: int
    entries: tuple[Prepared, ...]

    @property
    def arrays(self) -> list[np.ndarray]:
        """The arrays of the inputs that were prepared successfully."""
        return [e.array for e in self.entries if e.array is not None]


def make_batches(prepared: Iterable[Prepared], batch_size: int) -> Iterator[Batch]:
    """Group prepared inputs into batches of ``batch_size`` arrays, keeping input order.

    Failed inputs ride along in the batch they fall in (they cost no request); a batch is also
    closed once it holds ``2 * batch_size`` entries, so a long run of failures streams out too.

    Raises:
        ValueError: if ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    entries: list[Prepared] = []
    arrays = 0
    index = 0
    for item in prepared:
        entries.append(item)
        arrays += item.array is not None
        if arrays == batch_size or len(entries) >= 2 * batch_size:
            yield Batch(index, tuple(entries))
            index += 1
            entries, arrays = [], 0
    if entries:
        yield Batch(index, tuple(entries))
