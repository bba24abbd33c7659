"""Every time limit of the client is a total one, against loopback servers that trickle or freeze.

A trickling server sends a byte every few tens of milliseconds: no single socket read ever waits
long, so only a limit on the whole call can stop it. Each test bounds its own duration.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import pytest

from resnext_triton.client import InferenceError, ServerUnavailable, TritonClassifier
from resnext_triton.client.cli import EXIT_SERVER, main
from resnext_triton.client.errors import FetchError
from resnext_triton.client.inputs import fetch_url
from resnext_triton.client.transport import InferRequest, make_transport
from resnext_triton.client.watchdog import Watchdog

LIMIT_S = 1.0
SLACK_S = 2.0  # thread start-up, the last poll, a loaded 2-core machine
TRICKLE_INTERVAL_S = 0.05  # far below every limit: a per-read timeout would never fire


class Trickler:
    """A loopback TCP server: per connection, read the request, send ``head``, then ``trickle`` a byte at a time.

    With nothing to trickle it holds the connection open without a word (a frozen server).
    """

    def __init__(self, head: bytes = b"", trickle: bytes = b""):
        self.head, self.trickle = head, trickle
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(2)
            conn.recv(1 << 16)
            conn.sendall(self.head)
            for byte in self.trickle:
                if self._stop.wait(TRICKLE_INTERVAL_S):
                    return
                conn.sendall(bytes([byte]))
            self._stop.wait()
        except OSError:  # the client gave up and closed
            pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def trickler() -> Iterator[type[Trickler]]:
    started: list[Trickler] = []

    def make(head: bytes = b"", trickle: bytes = b"") -> Trickler:
        server = Trickler(head, trickle)
        started.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in started:
        server.close()


HEADERS_FOREVER = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100_000
BODY_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
# A TLS record header announcing a 16 KiB handshake record, then its bytes one at a time.
TLS_RECORD_HEAD = b"\x16\x03\x03\x40\x00"


def _timed(fn: object, *args: object, **kwargs: object) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        fn(*args, **kwargs)  # type: ignore[operator]
    except BaseException as exc:  # what the call raised is the result
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


# ----------------------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("scheme", "head", "trickle"),
    [
        ("http", b"", HEADERS_FOREVER),
        ("http", BODY_HEAD, b"\x89PNG" * 25_000),
        ("https", TLS_RECORD_HEAD, b"\x02" * 16_384),
    ],
    ids=["headers", "body", "tls-handshake"],
)
def test_url_that_trickles_times_out_in_total(trickler, scheme: str, head: bytes, trickle: bytes) -> None:
    server = trickler(head, trickle)
    exc, elapsed = _timed(fetch_url, f"{scheme}://{server.address}/photo.png", timeout_s=LIMIT_S)
    assert isinstance(exc, FetchError), exc
    assert str(exc) == f"URL timed out after {LIMIT_S:g} s"
    assert LIMIT_S - 0.1 <= elapsed < LIMIT_S + SLACK_S


# ----------------------------------------------------------------------------------------- Triton client


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_waiting_for_a_trickling_server_ends_within_the_timeout(trickler, protocol: str) -> None:
    server = trickler(trickle=HEADERS_FOREVER)
    with TritonClassifier(server.address, protocol, timeout_s=LIMIT_S) as clf:
        exc, elapsed = _timed(clf.wait_until_ready)
    assert isinstance(exc, ServerUnavailable), exc
    assert f"is not reachable after {LIMIT_S:g} s" in str(exc)
    assert elapsed < LIMIT_S + SLACK_S


def test_cli_exits_3_within_the_timeout_against_a_trickling_http_server(trickler, tmp_path) -> None:
    server = trickler(trickle=HEADERS_FOREVER)
    out, err = io.StringIO(), io.StringIO()
    args = [str(tmp_path / "x.jpg"), "-i", "http", "-u", server.address, "--timeout", f"{LIMIT_S:g}"]
    started = time.monotonic()
    code = main(args, out=out, err=err)
    assert code == EXIT_SERVER
    assert time.monotonic() - started < LIMIT_S + SLACK_S
    assert err.getvalue() == f"error: Triton server at {server.address} (http) is not reachable after 1 s: timed out\n"


def test_a_series_of_control_calls_shares_one_deadline(trickler) -> None:
    server = trickler(trickle=HEADERS_FOREVER)
    transport = make_transport("http", server.address, timeout_s=30, request_timeout_s=30)

    def calls() -> None:
        with transport.deadline(LIMIT_S):
            for _ in range(5):
                with contextlib.suppress(ServerUnavailable):
                    transport.server_live()

    try:
        exc, elapsed = _timed(calls)
    finally:
        transport.close()
    assert exc is None
    assert elapsed < LIMIT_S + 5 * 0.05 + SLACK_S  # one limit, plus a last try per call after it


def _request() -> InferRequest:
    data = np.zeros((1, 3, 4, 4), np.float32)
    return InferRequest("m", "INPUT__0", "FP32", data, "OUTPUT__0")


def test_an_http_request_that_trickles_times_out_in_total(trickler) -> None:
    server = trickler(trickle=HEADERS_FOREVER)
    transport = make_transport("http", server.address, timeout_s=LIMIT_S, request_timeout_s=LIMIT_S)
    try:
        with transport.infer_session() as session:
            exc, elapsed = _timed(session.infer, _request())
    finally:
        transport.close()
    assert isinstance(exc, InferenceError), exc
    assert str(exc) == f"inference timed out after {LIMIT_S:g} s"
    assert elapsed < LIMIT_S + SLACK_S


class _DropsInference(http.server.BaseHTTPRequestHandler):
    """Answers the liveness probe; closes the connection on an inference request without a word."""

    live: ClassVar[bool] = True
    probes: ClassVar[int] = 0

    def do_GET(self) -> None:
        type(self).probes += 1
        self.send_response(200 if self.live and self.path == "/v2/health/live" else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.close_connection = True  # no response at all: geventhttpclient's HTTPConnectionClosed

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def dropping_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DropsInference)
    server.daemon_threads = True
    _DropsInference.live, _DropsInference.probes = True, 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_dropped_request_on_a_live_server_fails_that_request_only(dropping_server: str) -> None:
    transport = make_transport("http", dropping_server, timeout_s=LIMIT_S, request_timeout_s=LIMIT_S)
    try:
        with transport.infer_session() as session:
            with pytest.raises(InferenceError, match="the server dropped the request: connection closed"):
                session.infer(_request())
            _DropsInference.live = False  # the server now fails its probe: it is gone for the client
            with pytest.raises(ServerUnavailable, match=f"lost Triton at {dropping_server} \\(HTTP\\)"):
                session.infer(_request())
    finally:
        transport.close()
    assert _DropsInference.probes == 2


def test_a_refused_connection_mid_run_is_the_server_lost() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        address = f"127.0.0.1:{s.getsockname()[1]}"
    transport = make_transport("http", address, timeout_s=LIMIT_S, request_timeout_s=LIMIT_S)
    try:
        with transport.infer_session() as session, pytest.raises(ServerUnavailable, match="connection refused"):
            session.infer(_request())
    finally:
        transport.close()


# ----------------------------------------------------------------------------------------- frozen server


def test_watchdog_aborts_when_a_waiting_request_meets_a_frozen_server(trickler) -> None:
    frozen = trickler()  # accepts, reads, never answers
    watchdog = Watchdog(
        lambda: make_transport("http", frozen.address, timeout_s=LIMIT_S, request_timeout_s=60), patience_s=LIMIT_S
    )
    started = time.monotonic()
    with watchdog, watchdog.request():
        exc = watchdog.abort.exception(timeout=10)
    elapsed = time.monotonic() - started
    assert isinstance(exc, ServerUnavailable)
    assert str(exc).startswith(f"Triton at {frozen.address} (http) stopped answering: a request has waited ")
    assert str(exc).endswith("the liveness probe failed: timed out")
    assert 2 * LIMIT_S - 0.1 <= elapsed < 2 * LIMIT_S + SLACK_S  # patience, then the probe's own limit


def test_watchdog_lets_a_slow_request_on_a_live_server_go_on(dropping_server: str) -> None:
    watchdog = Watchdog(
        lambda: make_transport("http", dropping_server, timeout_s=LIMIT_S, request_timeout_s=60), patience_s=0.5
    )
    with watchdog, watchdog.request():
        time.sleep(2.0)
        assert not watchdog.abort.done()
    assert _DropsInference.probes >= 2  # probed, answered, probed again a patience later
    with watchdog.request():
        pass
    assert not watchdog.abort.done()
