"""The streaming stages: ordered bounded map, worker pool, batching; 10,000 images in bounded memory."""

from __future__ import annotations

import io
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from resnext_triton.client.errors import INPUT_ERRORS
from resnext_triton.client.inputs import Source, load_source
from resnext_triton.client.pipeline import Batch, Prepared, WorkerPool, make_batches, ordered_map
from resnext_triton.preprocess import preprocess_image
from resnext_triton.spec import Preprocessing


def test_ordered_map_keeps_order_with_uneven_work() -> None:
    with ThreadPoolExecutor(4) as pool:

        def work(i: int) -> int:
            time.sleep(0.01 * ((7 * i) % 5))
            return i * i

        out = list(ordered_map(lambda i: pool.submit(work, i), range(30), window=6))
    assert out == [i * i for i in range(30)]


def test_ordered_map_pulls_at_most_window_ahead() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield i

    with ThreadPoolExecutor(2) as pool:
        it = ordered_map(lambda i: pool.submit(lambda: i), items(), window=5)
        for consumed in range(1, 20):
            next(it)
            assert pulled - consumed <= 5
        it.close()


def test_ordered_map_raises_the_items_error_and_cancels_the_rest() -> None:
    with ThreadPoolExecutor(1) as pool:

        def work(i: int) -> int:
            if i == 2:
                raise ValueError("boom")
            return i

        it = ordered_map(lambda i: pool.submit(work, i), range(10), window=3)
        assert next(it) == 0 and next(it) == 1
        with pytest.raises(ValueError, match="boom"):
            next(it)
    with pytest.raises(ValueError):
        list(ordered_map(lambda i: Future(), [1], window=0))


def test_ordered_map_raises_the_abort_at_once_without_waiting_for_the_work_in_flight() -> None:
    abort: Future[None] = Future()
    never: Future[int] = Future()  # a request to a frozen server
    done: Future[int] = Future()
    done.set_result(7)
    futures = iter([done, never])
    it = ordered_map(lambda _: next(futures), range(2), window=2, abort=abort)
    assert next(it) == 7  # what is done is handed out first
    threading.Timer(0.2, abort.set_exception, [ConnectionError("server froze")]).start()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="server froze"):
        next(it)
    assert time.monotonic() - started < 2
    assert never.cancelled()


def test_worker_pool_gives_each_thread_its_own_context_and_closes_it_there() -> None:
    opened: list[tuple[int, int]] = []
    closed: list[tuple[int, int]] = []

    @contextmanager
    def context() -> Iterator[int]:
        ident = threading.get_ident()
        opened.append((ident, len(opened)))
        try:
            yield ident
        finally:
            closed.append((threading.get_ident(), ident))

    pool: WorkerPool[int] = WorkerPool(3, context, name="test")
    futures = [pool.submit(lambda ctx, x: (ctx == threading.get_ident(), x * 2), i) for i in range(20)]
    results = [f.result(timeout=10) for f in futures]
    pool.shutdown(timeout_s=5)
    assert results == [(True, i * 2) for i in range(20)]
    assert len(opened) == 3 and len(closed) == 3
    assert all(a == b for a, b in closed)  # closed in the thread that opened it


def test_worker_pool_reports_a_failing_context_through_the_futures() -> None:
    @contextmanager
    def broken() -> Iterator[None]:
        raise ConnectionError("no server")
        yield

    pool: WorkerPool[None] = WorkerPool(1, broken, name="broken")
    future = pool.submit(lambda ctx, x: x, 1)
    with pytest.raises(ConnectionError):
        future.result(timeout=5)
    pool.shutdown(timeout_s=5)


def _prepared(i: int, ok: bool = True) -> Prepared:
    source = Source.invalid(f"in{i}", "bad") if not ok else Source.of(f"in{i}")
    return Prepared(source, array=np.zeros(1) if ok else None, error=None if ok else "bad")


def test_batches_hold_batch_size_arrays_and_keep_failures_in_place() -> None:
    items = [_prepared(i, ok=i not in (1, 5, 6)) for i in range(12)]
    batches = list(make_batches(items, 3))
    assert [len(b.arrays) for b in batches] == [3, 3, 3]
    assert [e.source.name for b in batches for e in b.entries] == [f"in{i}" for i in range(12)]
    assert [b.index for b in batches] == [0, 1, 2]


def test_a_run_of_failures_streams_out_without_waiting_for_arrays() -> None:
    def items() -> Iterator[Prepared]:
        for i in range(10):
            yield _prepared(i, ok=False)
        raise AssertionError("pulled too far")

    first = next(make_batches(items(), 2))
    assert isinstance(first, Batch) and len(first.entries) == 4 and not first.arrays
    with pytest.raises(ValueError):
        next(make_batches([], 0))


def test_ten_thousand_images_stream_through_the_input_stage_in_bounded_memory() -> None:
    """The decode/preprocess stage and the batcher over 10,000 inputs keep O(window) arrays alive."""
    pre = Preprocessing(resize_shorter=16, crop=16)
    count, batch_size, window = 10_000, 8, 24
    alive = 0
    peak_alive = 0
    pulled = 0
    lock = threading.Lock()

    def released() -> None:
        nonlocal alive
        with lock:
            alive -= 1

    def sources() -> Iterator[Source]:
        nonlocal pulled
        for i in range(count):
            pulled += 1
            buf = io.BytesIO()
            Image.new("RGB", (20, 17), (i % 256, 0, 0)).save(buf, "PNG")
            yield Source.of(buf.getvalue() if i % 1000 else b"broken", i)

    def prepare(source: Source) -> Prepared:
        nonlocal alive, peak_alive
        try:
            array = preprocess_image(load_source(source), pre)
        except INPUT_ERRORS as exc:
            return Prepared(source, error=str(exc))
        with lock:
            alive += 1
            peak_alive = max(peak_alive, alive)
        weakref.finalize(array, released)
        return Prepared(source, array=array)

    seen = failures = 0
    max_ahead = 0
    with ThreadPoolExecutor(2) as pool:
        prepared = ordered_map(lambda s: pool.submit(prepare, s), sources(), window)
        for batch in make_batches(prepared, batch_size):
            seen += len(batch.entries)
            failures += sum(e.array is None for e in batch.entries)
            max_ahead = max(max_ahead, pulled - seen)
            del batch
    assert seen == count and failures == count // 1000
    assert max_ahead <= window + 2 * batch_size
    assert peak_alive <= window + 2 * batch_size + 2  # never all 10,000
