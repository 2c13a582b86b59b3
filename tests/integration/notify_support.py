"""Real notification receivers on loopback: an HTTP server for apprise's json:// and an SMTP
server (aiosmtpd) for mailto://, each recording what it received."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class JsonReceiver:
    """A webhook receiver: records each JSON body; answers 503 while `down` is set."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.down = False
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    if receiver.down:
                        receiver.refused += 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    receiver.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", extra: str = "") -> str:
        return f"json://127.0.0.1:{self.port}{path}{extra}"

    def texts(self) -> list[str]:
        with self.lock:
            return [f"{m.get('title', '')}\n{m.get('message', '')}" for m in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """An SMTP server that requires the password `password` and records each message."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.messages: list[email.message.EmailMessage] = []
        self.raw: list[bytes] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                receiver.raw.append(envelope.content)
                receiver.messages.append(
                    email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
                )
                return "250 OK"

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            return AuthResult(success=auth_data.password == password.encode())

        self.port = free_port()
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_require_tls=False,
        )
        self.controller.start()

    def url(self) -> str:
        return (
            f"mailto://alice:{self.password}@example.com?smtp=127.0.0.1&port={self.port}"
            "&to=ops@example.com&from=propready@example.com&secure_mode=insecure"
        )

    def texts(self) -> list[str]:
        found = []
        for message in self.messages:
            parts = [str(message["Subject"])]
            for part in message.walk():
                if part.get_content_maintype() == "text":
                    parts.append(str(part.get_content()))
            found.append("\n".join(parts))
        return found

    def close(self) -> None:
        self.controller.stop()


@contextmanager
def json_receiver() -> Iterator[JsonReceiver]:
    receiver = JsonReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
