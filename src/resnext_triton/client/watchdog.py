"""Fail a run fast when its server freezes instead of waiting out every request's timeout.

A server that stops answering (stopped with SIGSTOP, hung, its host gone without a reset) would
otherwise cost the whole ``request_timeout_s`` for every batch. :class:`Watchdog` watches the
requests in flight: once one has waited ``patience_s`` seconds, it probes the server's liveness
on a connection of its own, within ``timeout_s``. A server that answers is only slow, and the
requests go on (probed again every ``patience_s``); a server that does not aborts the run through
:attr:`Watchdog.abort`, which :func:`.pipeline.ordered_map` watches beside the results.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

from resnext_triton.client.errors import ServerUnavailable
from resnext_triton.client.transport import Transport

logger = logging.getLogger(__name__)


class Watchdog:
    """Probes the server's liveness while a request waits too long; aborts the run if it is gone.

    Args:
        make_transport: a new connection to the server, used by the watchdog's thread alone.
        patience_s: how long a request may wait before the server's liveness is probed.
    """

    def __init__(self, make_transport: Callable[[], Transport], *, patience_s: float):
        self.abort: Future[None] = Future()
        """Fails with :class:`ServerUnavailable` when the server stops answering."""
        self.patience_s = patience_s
        self._make_transport = make_transport
        self._started: dict[int, float] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resnext-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Mark a request in flight for the duration of the block."""
        key = next(self._ids)
        with self._lock:
            self._started[key] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                del self._started[key]

    def _longest_wait(self) -> float:
        with self._lock:
            oldest = min(self._started.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    def _run(self) -> None:
        transport: Transport | None = None
        next_probe = 0.0
        try:
            while not self._stop.wait(min(1.0, self.patience_s / 4)):
                waited = self._longest_wait()
                if waited < self.patience_s or time.monotonic() < next_probe:
                    continue
                transport = transport or self._make_transport()
                try:
                    live, reason = transport.server_live(), "it is not live"
                except ServerUnavailable as exc:
                    live, reason = False, f"the liveness probe failed: {exc}"
                if live or self._stop.is_set():
                    logger.info("a request has waited %.0f s; the server is live", waited)
                    next_probe = time.monotonic() + self.patience_s
                    continue
                self.abort.set_exception(
                    ServerUnavailable(
                        f"Triton at {transport.url} ({transport.protocol}) stopped answering: a request "
                        f"has waited {waited:.0f} s and {reason}"
                    )
                )
                return
        except Exception as exc:  # the watchdog must never take the run down itself
            logger.debug("watchdog stopped: %s", exc, exc_info=True)
        finally:
            if transport is not None:
                transport.close()
