"""Helpers for the webhook tests: the real receiver in-process, and a capturing HTTP receiver.

- `Receiver`: propready's webhook app on uvicorn on a loopback port (the same objects
  `propready serve` builds), with the state engine and metrics a test reads.
- `CaptureReceiver`: a plain HTTP server that records every body and answers a status the test
  chooses, for tests of the sandbox's sending side alone.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import sqlalchemy as sa

from propready.adapters.store import deliveries
from propready.adapters.store.deliveries import Delivery
from propready.adapters.store.engine import create_state_engine
from propready.receiver.metrics import ServeMetrics
from propready.receiver.server import ReceiverServer
from propready.receiver.tokens import TokenChecker
from propready.wiring import webhook_listener

TOKEN = "current-webhook-token-0123456789"
OLD_TOKEN = "retired-webhook-token-0123456789"
WEBHOOK_PATH = "/webhooks/planomatic"


@dataclass
class Receiver:
    server: ReceiverServer
    engine: sa.Engine
    metrics: ServeMetrics
    url: str  # base URL, e.g. http://127.0.0.1:41234

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{WEBHOOK_PATH}/{TOKEN}"

    def post(self, content: bytes, token: str = TOKEN, **kwargs: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}{WEBHOOK_PATH}/{token}", content=content, timeout=30, **kwargs
        )

    def rows(self) -> list[Delivery]:
        with self.engine.connect() as connection:
            return deliveries.list_deliveries(connection)

    def outcome_count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "propready_webhook_deliveries_total", {"outcome": outcome}
        )
        return value or 0.0


@contextmanager
def running_receiver(state_url: str, listen: str = "127.0.0.1:0") -> Iterator[Receiver]:
    """The webhook listener as `propready serve` wires it, serving from a thread."""
    engine = create_state_engine(state_url, pool_size=4, max_overflow=0, pool_pre_ping=False)
    metrics = ServeMetrics()
    writers = 1 if state_url.startswith("sqlite") else 4
    listener = webhook_listener(listen, engine, TokenChecker([TOKEN, OLD_TOKEN]), metrics, writers)
    server = ReceiverServer([listener])
    try:
        server.start()
        yield Receiver(server, engine, metrics, server.urls()["webhooks"])
    finally:
        server.stop()
        engine.dispose()


def delivery(order_id: int, status: str, when: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"order_id": order_id, "order_status": status, **extra}
    if when is not None:
        body["event_datetime"] = when
    return json.dumps(body).encode()


@dataclass
class CaptureReceiver:
    """Records every POST body; answers `status`, or the next of `script` while it lasts."""

    status: int = 200
    script: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> CaptureReceiver:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with capture._lock:
                    status = capture.script.pop(0) if capture.script else capture.status
                    capture.answers.append(status)
                    if 200 <= status < 300:
                        capture.bodies.append(json.loads(raw))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}{WEBHOOK_PATH}/{TOKEN}"

    def events(self) -> list[tuple[Any, str]]:
        """(order id, event) of each body accepted, in arrival order, either shape."""
        with self._lock:
            found = []
            for body in self.bodies:
                order = body.get("order", body)
                found.append((order.get("order_id"), body.get("event")))
            return found

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
