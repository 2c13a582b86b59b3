"""The sandbox on a real socket: a threaded HTTP server around `SandboxApp`.

Only transport lives here: reading the body, writing JSON, one log line per request. The stdlib
server is enough for a test double and adds no dependency to the daemon.
"""

from __future__ import annotations

import json
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import structlog

from propready.adapters.sandbox.app import Reply, SandboxApp
from propready.adapters.sandbox.config import SandboxConfig
from propready.adapters.sandbox.webhooks import WebhookSender

logger = structlog.get_logger()

# Far above any real order; a bigger body is refused without reading it into memory.
MAX_BODY_BYTES = 1 << 20
# The stdlib loop notices shutdown() only between polls; its 0.5 s default made every test
# teardown (and every SIGTERM) wait half a second.
SHUTDOWN_POLL_SECONDS = 0.05
_CRASH = Reply(500, {"code": 500, "status": "application-crash"})


class SandboxServer:
    """A PlanOmatic V3 Order API look-alike listening on `url` until `stop()`."""

    def __init__(
        self,
        config: SandboxConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._app = SandboxApp(config, clock)
        # Bound here, not in start(), so `url` is known (port 0 included) before serving.
        self._httpd = _SandboxHTTPServer((host, port), self._app)
        self._host = host
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._httpd.server_port}"

    def start(self) -> SandboxServer:
        """Serve from a daemon thread and return at once."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("a sandbox server can be started once")
        # Marked before the thread runs so a stop() right after start() still shuts it down.
        self._serving = True
        self._app.start_background()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(SHUTDOWN_POLL_SECONDS,),
            name="propready-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread; another thread must call `stop()`."""
        self._serving = True
        self._app.start_background()
        self._httpd.serve_forever(SHUTDOWN_POLL_SECONDS)

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice or before start()."""
        if self._stopped:
            return
        self._stopped = True
        # shutdown() waits for a serve loop to finish, so it would hang if none ever ran.
        self._httpd.stopping.set()  # releases stalled handlers at once
        if self._serving:
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join()
        self._httpd.server_close()
        self._app.stop_background()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def orders(self) -> list[dict[str, Any]]:
        """Copies of every stored order, oldest first: the vendor's ledger, for assertions."""
        return self._app.ledger.snapshot()

    def requests_seen(self) -> int:
        """Requests received so far, rejected ones included."""
        return self._app.requests_seen()

    def advance_status(self, order_id: int, status: str) -> None:
        """Set an order's status as the vendor's back office would (KeyError if unknown), and
        send the step's webhook when a subscription is configured."""
        self._app.advance(order_id, status)

    @property
    def webhooks(self) -> WebhookSender | None:
        """The webhook subscription (None when no --webhook-url), for tests to drive and read."""
        return self._app.webhooks

    def inject(self, action: str, *kinds: str) -> None:
        """Queue faults for the next requests of `action` (see `sandbox.faults`)."""
        self._app.faults.add(action, kinds)

    def pending_faults(self) -> dict[str, list[str]]:
        return self._app.faults.pending()


class _SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a keep-alive connection must not block exit

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        self.stopping = threading.Event()
        super().__init__(address, _SandboxRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for seconds where
        # reverse DNS is missing; the sandbox never uses that name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Default prints a traceback to stderr; keep the process's output structured instead.
        _log_failure("sandbox.connection_error", sys.exc_info()[1])


class _SandboxRequestHandler(BaseHTTPRequestHandler):
    server: _SandboxHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as a real client pool expects
    server_version = "propready-sandbox"
    timeout = 30  # an idle keep-alive connection must not pin a handler thread forever
    # Headers and body leave in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK, adding about 40 ms to every request.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self._serve()

    # Every other method gets the vendor's JSON 405 instead of the stdlib's HTML 501.
    do_GET = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_POST

    def version_string(self) -> str:
        # The stdlib appends the Python version; a test double has no reason to advertise it.
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: `_serve` writes one structured line per request instead."""

    def _serve(self) -> None:
        started = time.perf_counter()
        raw_body = self._read_body()
        latency = self.server.app.config.latency_seconds
        if latency > 0:
            self.server.stopping.wait(latency)
        try:
            reply = self.server.app.respond(self.command, self.path, raw_body)
        # The vendor answers any unexpected failure with 500 application-crash; so does its twin.
        except Exception as crash:  # noqa: BLE001 - logged by _log_failure, answered as a 500
            _log_failure("sandbox.crash", crash, method=self.command)
            reply = _CRASH
        # Logged before the reply is written, so whoever holds the answer also finds the line.
        logger.info(
            "sandbox.request",
            method=self.command,
            # The path only: a query string is client-controlled and could carry a secret.
            path=urlsplit(self.path).path,
            status=reply.status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            **({"fault": reply.after} if reply.after else {}),
        )
        if reply.after == "stall":
            self.server.stopping.wait(self.server.app.config.stall_seconds)
        if reply.after in ("drop", "stall"):
            # Saved, but the client never hears: close without a byte of answer.
            self.close_connection = True
            return
        self._send(reply)

    def _read_body(self) -> bytes | None:
        """The request body, or None when it cannot be read safely (then the connection closes)."""
        if self.headers.get("Transfer-Encoding"):
            # Chunked uploads are not worth supporting here; closing keeps the stream in sync.
            self.close_connection = True
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def _send(self, reply: Reply) -> None:
        payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        content_type = "text/html" if reply.raw is not None else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def _log_failure(event: str, error: BaseException | None, **context: Any) -> None:
    """Log where a failure happened but not its message or locals.

    Rich tracebacks show every frame's locals, and `_serve`'s locals hold the raw body with the
    api_key and access code; exception messages can quote the same values. Frames and the type
    name are enough to find the bug.
    """
    frames = traceback.format_tb(error.__traceback__) if error is not None else []
    logger.error(event, error_type=type(error).__name__, frames="".join(frames), **context)
