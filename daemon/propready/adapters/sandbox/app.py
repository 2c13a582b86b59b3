"""The Order API's protocol without the socket: (method, path, body bytes) in, status and JSON out.

Keeping this apart from `server.py` lets the HTTP handler stay a thin shell that only moves bytes,
and keeps the order of checks in one readable place: route, method, JSON, rate limit, then the
action's own validation and ledger.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from propready.adapters.sandbox.config import SandboxConfig
from propready.adapters.sandbox.faults import FaultQueue
from propready.adapters.sandbox.ledger import (
    DuplicateOrder,
    FixedWindowRateLimiter,
    Ledger,
    NotCancelable,
    UnknownOrder,
)
from propready.adapters.sandbox.validation import (
    ValidationError,
    validate_cancel,
    validate_create,
    validate_retrieve,
)

ROUTES = {
    "/api/v3/orders/create": "create",
    "/api/v3/orders/retrieve": "retrieve",
    "/api/v3/orders/cancel": "cancel",
}


CONTROL_ADVANCE = "/_sandbox/advance"
_PROXY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>Bad gateway</body></html>"


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = field(default=())
    raw: bytes | None = None  # sent instead of `body` (a proxy's HTML page)
    after: str | None = None  # "drop" or "stall": what the socket does instead of answering


class SandboxApp:
    def __init__(self, config: SandboxConfig, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.ledger = Ledger()
        self._clock = clock
        self._rate_limiter = FixedWindowRateLimiter(config.rate_limit, config.rate_window_seconds)
        self._duplicate_window = (
            timedelta(hours=config.duplicate_threshold_hours)
            if config.duplicate_threshold_hours > 0
            else None
        )
        self._counter_lock = threading.Lock()
        self._requests_seen = 0
        self.faults = FaultQueue(config.faults)
        self._actions: dict[str, Callable[[Mapping[str, Any]], Reply]] = {
            "create": self._create,
            "retrieve": self._retrieve,
            "cancel": self._cancel,
        }

    def requests_seen(self) -> int:
        with self._counter_lock:
            return self._requests_seen

    def respond(self, method: str, path: str, raw_body: bytes | None) -> Reply:
        """The vendor's answer to one request; `raw_body` is None when it could not be read."""
        with self._counter_lock:
            self._requests_seen += 1
        route = urlsplit(path).path
        if route == CONTROL_ADVANCE and method == "POST":
            return self._advance(_json_object(raw_body))
        action = ROUTES.get(route)
        if action is None:
            return Reply(404, {"code": 404, "status": "not-found"})
        if method != "POST":
            # The vendor documents POST only, retrieve included.
            return Reply(405, {"code": 405, "status": "method-not-allowed"}, (("Allow", "POST"),))
        body = _json_object(raw_body)
        if body is None:
            return _validation_error([{"attr": "body", "message": "invalid_json"}])
        fault = self.faults.take(action)
        if fault == "429":
            return _RATE_LIMITED
        if fault == "500":
            return _CRASH
        if fault == "502_html":
            return Reply(502, {}, raw=_PROXY_PAGE)
        if not self._within_rate_limit(body):
            return _RATE_LIMITED
        reply = self._actions[action](body)
        if fault == "500_after_save":
            return _CRASH
        if fault in ("drop", "stall"):
            return Reply(reply.status, reply.body, after=fault)
        return reply

    def _advance(self, body: Mapping[str, Any] | None) -> Reply:
        """Back-office control (no api key): move an order to `status`, or one step along."""
        if body is None or not isinstance(body.get("order_id"), int):
            return _validation_error([{"attr": "order_id", "message": "missing"}])
        status = body.get("status")
        try:
            order = self.ledger.progress(
                body["order_id"], status if isinstance(status, str) else None
            )
        except KeyError:
            return _validation_error([_unrecognized_order()])
        except ValueError:
            return _validation_error([{"attr": "status", "message": "unrecognized"}])
        return _success(200, order)

    def _now(self) -> datetime:
        moment = self._clock() if self._clock is not None else datetime.now(UTC)
        # A naive test clock means UTC; astimezone() would otherwise read it as local time.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def _window_seconds_now(self) -> float:
        # An injected clock drives the window too, so tests can step past it without sleeping.
        return self._now().timestamp() if self._clock is not None else time.monotonic()

    def _within_rate_limit(self, body: Mapping[str, Any]) -> bool:
        api_key = body.get("api_key")
        # Requests without a key cannot be attributed to one; validation rejects them anyway.
        if not isinstance(api_key, str):
            return True
        return self._rate_limiter.allow(api_key, self._window_seconds_now())

    def _create(self, body: Mapping[str, Any]) -> Reply:
        errors = validate_create(body, self.config)
        if errors:
            return _validation_error(errors)
        try:
            order = self.ledger.create(body["api_key"], body, self._now(), self._duplicate_window)
        except DuplicateOrder:
            return _validation_error(
                [{"attr": "external_property_id", "message": self.config.duplicate_message}]
            )
        return _success(201, order)

    def _retrieve(self, body: Mapping[str, Any]) -> Reply:
        ref, errors = validate_retrieve(body, self.config)
        if ref is None:
            return _validation_error(errors)
        try:
            return _success(200, self.ledger.find(body["api_key"], ref))
        except UnknownOrder:
            return _validation_error([_unrecognized_order()])

    def _cancel(self, body: Mapping[str, Any]) -> Reply:
        ref, errors = validate_cancel(body, self.config)
        if ref is None:
            return _validation_error(errors)
        try:
            order = self.ledger.cancel(
                body["api_key"], ref, body["cancelation_reason"], body["notes"]
            )
        except UnknownOrder:
            return _validation_error([_unrecognized_order()])
        except NotCancelable:
            return _validation_error([{"attr": "order_id", "message": "not_cancelable"}])
        return _success(200, order)


def _json_object(raw_body: bytes | None) -> Mapping[str, Any] | None:
    if raw_body is None:
        return None
    try:
        parsed = json.loads(raw_body)
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; absurd nesting exhausts the stack.
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


_RATE_LIMITED = Reply(429, {"code": 429, "status": "rate-limit-exceeded"})
_CRASH = Reply(500, {"code": 500, "status": "application-crash"})


def _success(code: int, order: dict[str, Any]) -> Reply:
    return Reply(code, {"code": code, "status": "action-successful", "data": order})


def _validation_error(errors: list[ValidationError]) -> Reply:
    return Reply(400, {"code": 400, "status": "validation-error", "errors": errors})


def _unrecognized_order() -> ValidationError:
    # Unknown ids and other keys' ids answer alike, so a key cannot probe for foreign orders.
    return {"attr": "order_id", "message": "unrecognized"}
