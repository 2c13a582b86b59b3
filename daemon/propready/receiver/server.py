"""The configured listeners of `propready serve`, each a uvicorn server, in one event loop.

Sockets are bound here, before uvicorn starts, so that a busy port or an address that is not
this host's is one line naming the setting (`webhooks.listen: cannot listen on
127.0.0.1:8710 (address already in use)`) instead of uvicorn's log line and `sys.exit`.
uvicorn's own logging is left unconfigured and its access log off (`access_log`): the path holds
the webhook token. Signals are the caller's: `request_stop()` is safe from a signal handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from propready.runtime.metrics import parse_listen

# How long a stop waits for requests in flight (a delivery being committed) before cutting them.
GRACEFUL_STOP_SECONDS = 10.0
# Room for the vendor's retries after an outage and a burst of senders; the kernel's cap applies.
BACKLOG = 2048


@dataclass(frozen=True)
class Listener:
    name: str  # "webhooks" (later also "console")
    setting: str  # the setting that asked for it, named in errors: "webhooks.listen"
    listen: str  # HOST:PORT; port 0 picks a free one (tests)
    app: ASGIApp
    close: Callable[[], None] | None = None  # after the listener stopped (its writer threads)
    # uvicorn's X-Forwarded-* handling; the console reads them itself, only from its
    # [console] trusted_proxies, so it turns uvicorn's off.
    proxy_headers: bool = True


class ListenError(Exception):
    """A listener cannot be bound; the message is one line naming the setting and address."""


class ReceiverServer:
    """Binds every listener at construction; `run()` serves them until `request_stop()`."""

    def __init__(
        self, listeners: Sequence[Listener], *, graceful_seconds: float = GRACEFUL_STOP_SECONDS
    ) -> None:
        if not listeners:
            raise ValueError("nothing to serve")
        self._listeners = list(listeners)
        self._sockets: list[socket.socket] = []
        try:
            for listener in self._listeners:
                self._sockets.append(_bind(listener))
        except BaseException:
            self.close()
            raise
        self._servers = [
            _Server(_config(listener.app, graceful_seconds, listener.proxy_headers))
            for listener in self._listeners
        ]
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def urls(self) -> dict[str, str]:
        """Each listener's base URL, e.g. {"webhooks": "http://127.0.0.1:8710"}."""
        urls = {}
        for listener, sock in zip(self._listeners, self._sockets, strict=True):
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in str(host) else str(host)
            urls[listener.name] = f"http://{shown}:{port}"
        return urls

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve in the calling thread until `request_stop()`; `on_ready` once all listen."""
        loop_factory = self._servers[0].config.get_loop_factory()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(self._serve_all(on_ready))

    def start(self, timeout: float = 10.0) -> ReceiverServer:
        """Serve from a daemon thread; return once every listener accepts requests."""
        self._thread = threading.Thread(target=self.run, name="propready-serve", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the listeners did not start in time")
        return self

    def request_stop(self) -> None:
        """Ask every listener to finish the requests in flight and stop (signal-safe)."""
        for server in self._servers:
            server.should_exit = True

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.close()

    def close(self) -> None:
        """Release the sockets and what the listeners hold (safe to call twice)."""
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for listener in self._listeners:
            if listener.close is not None:
                listener.close()

    def __enter__(self) -> ReceiverServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def _serve_all(self, on_ready: Callable[[], None] | None) -> None:
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, self._sockets, strict=True)
        ]
        while not all(server.started for server in self._servers):
            if any(task.done() for task in tasks):
                break  # one failed to start: gather() below raises its error
            await asyncio.sleep(0.01)
        else:
            self._ready.set()
            if on_ready is not None:
                on_ready()
        try:
            await asyncio.gather(*tasks)
        finally:
            self.request_stop()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn would take SIGINT/SIGTERM for itself, one server at a time; the caller
        # handles signals for all listeners at once.
        yield


def _config(app: ASGIApp, graceful_seconds: float, proxy_headers: bool = True) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        proxy_headers=proxy_headers,
        lifespan="off",
        log_config=None,  # keep propready's logging set-up
        access_log=False,  # it would log the path, token included; access_log.py logs instead
        server_header=False,
        timeout_graceful_shutdown=int(graceful_seconds),
        backlog=BACKLOG,
    )


def _bind(listener: Listener) -> socket.socket:
    where = f"{listener.setting}: cannot listen on {listener.listen}"
    try:
        host, port = parse_listen(listener.listen)
    except ValueError:
        raise ListenError(f"{where} (expected HOST:PORT)") from None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(f"{where} ({_reason(exc)})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(f"{where} ({_reason(exc)})") from None
    return sock


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).lower()
