"""A TCP proxy on loopback that a test can cut: connections dropped mid-stream, new ones refused.

Stands between propready and a real PostgreSQL server, so a source outage happens on the wire,
as it does in production, instead of in patched code.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to `target`; `cut_after(n)` drops every connection once `n`
    bytes have come back from the server, `down()` refuses new ones, `up()` serves again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._accepting = True
        self._cut_after: int | None = None
        self._forwarded = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://root@127.0.0.1:{self.port}/{database}"

    def cut_after(self, server_bytes: int) -> None:
        """Drop every connection once this many more bytes came back from the server."""
        with self._lock:
            self._forwarded = 0
            self._cut_after = server_bytes

    def down(self) -> None:
        """Drop every connection now and refuse new ones (connection refused, in effect)."""
        with self._lock:
            self._accepting = False
        self._drop_all()

    def up(self) -> None:
        with self._lock:
            self._accepting = True
            self._cut_after = None

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._drop_all()

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                accepting = self._accepting
            if not accepting:
                client.close()  # the client sees its connection closed at once
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if from_server and self._count(len(data)):
                    self._drop_all()
                    return
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _count(self, amount: int) -> bool:
        with self._lock:
            if self._cut_after is None:
                return False
            self._forwarded += amount
            if self._forwarded < self._cut_after:
                return False
            self._cut_after = None
            return True

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
