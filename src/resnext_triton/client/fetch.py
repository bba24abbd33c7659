"""Download an http(s) URL within a total time limit and a size limit.

urllib's ``timeout`` bounds each socket operation, not the download: a server that trickles its
headers or its body a byte at a time would hold a download forever. :func:`fetch_url` therefore
arms one timer for the whole download (:class:`_Deadline`). Every connection the download opens,
redirects included, is registered as it is created; when the time is up, the timer shuts them
down, whatever the download is doing (connecting, a TLS handshake, reading headers or the body),
and the failure that follows is reported as the timeout it is. Only the host name lookup before
connecting is left to the system resolver's own limits.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import Any

from resnext_triton import __version__
from resnext_triton.client.errors import FetchError

DEFAULT_URL_TIMEOUT_S = 5.0
"""Seconds allowed to fetch one URL, in all (connecting, headers and the whole body)."""
DEFAULT_MAX_DOWNLOAD_BYTES = 64 << 20
"""The largest download accepted from a URL (64 MiB)."""

_USER_AGENT = f"resnext-triton-client/{__version__}"


class _Deadline:
    """Shuts down every connection of one download when its time is up."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def watch(self, sock: socket.socket) -> None:
        """Register a new connection.

        A duplicate of its socket is kept (the TLS layer takes over the original object): shutting
        the duplicate down ends the connection for every descriptor of it.
        """
        duplicate = sock.dup()
        with self._lock:
            self._sockets.append(duplicate)
            if self.expired:
                _shutdown(duplicate)

    def connection(self, base: type[http.client.HTTPConnection]) -> Callable[..., http.client.HTTPConnection]:
        """A factory of ``base`` connections whose sockets are registered as they are created."""

        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            conn = base(host, **kwargs)
            create = conn._create_connection  # type: ignore[attr-defined]

            def create_watched(*args: Any, **kw: Any) -> socket.socket:
                sock: socket.socket = create(*args, **kw)
                self.watch(sock)
                return sock

            conn._create_connection = create_watched  # type: ignore[attr-defined]
            return conn

        return make


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._deadline.connection(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        self._ssl_context = ssl.create_default_context()
        super().__init__(context=self._ssl_context)
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        factory = self._deadline.connection(http.client.HTTPSConnection)
        return self.do_open(factory, req, context=self._ssl_context)


def fetch_url(
    url: str, *, timeout_s: float = DEFAULT_URL_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
) -> bytes:
    """Download a URL within ``timeout_s`` seconds in all, at most ``max_bytes`` bytes.

    Raises:
        FetchError: on an HTTP error status, an unreachable host, a timeout, a broken or
            malformed answer, or a too-large body.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with _Deadline(timeout_s) as deadline:
        opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline))
        try:
            with opener.open(request, timeout=timeout_s) as response:
                chunks: list[bytes] = []
                size = 0
                while chunk := response.read(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"download larger than {max_bytes:,} bytes")
                    chunks.append(chunk)
                if deadline.expired:  # the body was cut short when the time was up
                    raise FetchError(f"URL timed out after {timeout_s:g} s")
                return b"".join(chunks)
        except FetchError:
            raise
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if deadline.expired:
                raise FetchError(f"URL timed out after {timeout_s:g} s") from exc
            raise _fetch_error(exc, timeout_s) from exc


def _fetch_error(exc: Exception, timeout_s: float) -> FetchError:
    if isinstance(exc, urllib.error.HTTPError):
        return FetchError(f"HTTP {exc.code} {exc.reason}")
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, TimeoutError):
            return FetchError(f"URL unreachable: timed out after {timeout_s:g} s")
        return FetchError(f"URL unreachable: {exc.reason}")
    if isinstance(exc, TimeoutError):
        return FetchError(f"URL timed out after {timeout_s:g} s")
    return FetchError(f"cannot fetch URL: {exc or type(exc).__name__}")
