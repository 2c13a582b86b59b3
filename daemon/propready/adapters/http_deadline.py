"""A total deadline for one HTTP exchange (connect, write and read together).

httpx's timeouts apply to each network operation on its own: a server that trickles one byte
per second (in the headers or in the body) never trips a 30-second read timeout, and the request
never ends. `Deadline` arms a timer for the whole exchange; when it fires it shuts the request's
socket down, which wakes the blocked read at once (closing a socket does not wake a read
blocked on it in another thread; `shutdown` does), and httpx raises a transport error that the
caller reports as "no complete answer within the deadline".

The socket is learnt through httpcore's documented `trace` request extension (the
`connection.connect_tcp.complete` and `connection.start_tls.complete` events carry the network
stream, whose `get_extra_info("socket")` is the socket), so this needs no private API. It only
sees connections opened by the request itself: the client must not reuse pooled connections
(`httpx.Limits(max_keepalive_connections=0)`). Name resolution happens before there is a socket
and cannot be cut this way; the connect timeout bounds the rest of the connect phase.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any


class Deadline:
    """Use as a context manager around one request; pass `extension` as its `trace`."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = threading.Event()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    @property
    def expired(self) -> bool:
        """Whether the deadline passed (the socket was shut down, or time is simply up)."""
        return self._expired.is_set() or self.remaining() <= 0

    def remaining(self) -> float:
        return self.seconds - (self._clock() - self._started)

    def extension(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace callback: remember the sockets this request opens."""
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            late = self._expired.is_set()
        if late:  # the deadline passed while connecting
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired.set()
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: the exchange ended meanwhile
        sock.shutdown(socket.SHUT_RDWR)
