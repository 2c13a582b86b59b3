"""One structured log line per request, without the webhook token.

uvicorn's own access log is off (`server.py`): it prints the request line, path and query
included, and the path is where the vendor puts our secret. This middleware logs the method,
the path with the token replaced, the status, the time taken, the client and, for the webhook
path, what became of the delivery. The query string is never logged (`?token=` is accepted).
"""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEBHOOK_PREFIX = "/webhooks/planomatic"
OUTCOME_KEY = "propready.outcome"  # set in the scope by the webhook endpoint
MATCHED_SLOT_KEY = "propready.token_slot"  # "current" or "previous", never the token

log = structlog.get_logger("propready.serve")


def redact_path(path: str) -> str:
    """`/webhooks/planomatic/SECRET` -> `/webhooks/planomatic/***`; other paths unchanged."""
    if path.startswith(WEBHOOK_PREFIX + "/"):
        return WEBHOOK_PREFIX + "/***"
    return path


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, listener: str) -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer = {"status": 500, "bytes": 0}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = int(message["status"])
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            outcome = scope.get(OUTCOME_KEY)
            token_slot = scope.get(MATCHED_SLOT_KEY)
            log.info(
                "http_request",
                listener=self.listener,
                method=scope.get("method"),
                path=redact_path(scope.get("path", "")),
                status=answer["status"],
                bytes=answer["bytes"],
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client=client[0] if client else None,
                **({"outcome": outcome} if outcome else {}),
                **({"token_slot": token_slot} if token_slot else {}),
            )
