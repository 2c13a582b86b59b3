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
    Step,
    UnknownOrder,
)
from propready.adapters.sandbox.lifecycle import webhook_body
from propready.adapters.sandbox.validation import (
    ValidationError,
    validate_cancel,
    validate_create,
    validate_retrieve,
)
from propready.adapters.sandbox.webhooks import WebhookSender

ROUTES = {
    "/api/v3/orders/create": "create",
    "/api/v3/orders/retrieve": "retrieve",
    "/api/v3/orders/cancel": "cancel",
}


CONTROL_ADVANCE = "/_sandbox/advance"
CONTROL_WEBHOOKS = "/_sandbox/webhooks"
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
        self.webhooks: WebhookSender | None = None
        if config.webhook_url is not None:
            self.webhooks = WebhookSender(
                config.webhook_url,
                retry_seconds=config.webhook_retry_seconds,
                attempts=config.webhook_attempts,
                duplicates=config.webhook_duplicates,
                out_of_order=config.webhook_out_of_order,
            )
        self._stop_advancing = threading.Event()
        self._advancer: threading.Thread | None = None

    # --- background work: webhook deliveries and --auto-advance ------------------------------

    def start_background(self) -> None:
        if self.webhooks is not None:
            self.webhooks.start()
        if self.config.auto_advance_seconds is not None and self._advancer is None:
            self._advancer = threading.Thread(
                target=self._auto_advance, name="sandbox-auto-advance", daemon=True
            )
            self._advancer.start()

    def stop_background(self) -> None:
        self._stop_advancing.set()
        if self._advancer is not None:
            self._advancer.join(timeout=5)
        if self.webhooks is not None:
            self.webhooks.stop()

    def advance(self, order_id: int, status: str | None, reason: str | None = None) -> Step:
        """Move an order as the vendor's back office would, and send the step's webhook."""
        step = self.ledger.progress(order_id, status, self._now(), reason=reason)
        self._publish(step)
        return step

    def _auto_advance(self) -> None:
        seconds = self.config.auto_advance_seconds
        assert seconds is not None
        tick = min(max(seconds / 5, 0.01), 0.5)
        while not self._stop_advancing.wait(tick):
            now = self._now()
            for order_id in self.ledger.due_for_step(now - timedelta(seconds=seconds)):
                self._publish(self.ledger.progress(order_id, None, now))

    def _publish(self, step: Step) -> None:
        events = self.config.webhook_events
        if self.webhooks is None or step.event is None:
            return
        if events is not None and step.event not in events:
            return  # the subscription did not ask for it
        body = webhook_body(step.order, step.event, self._now(), self.config.webhook_shape)
        self.webhooks.publish(step.event, step.order.get("order_id"), body)

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
        if route == CONTROL_WEBHOOKS and method in ("GET", "POST"):
            return self._control_webhooks(_json_object(raw_body) if method == "POST" else {})
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
        """Back-office control (no api key): move an order to `status` (or `to`: a status or
        the steps unable_to_complete, delivered, canceled), or one step along; with `reason`
        for a cancel or an unable-to-complete."""
        if body is None or not isinstance(body.get("order_id"), int):
            return _validation_error([{"attr": "order_id", "message": "missing"}])
        status = body.get("to", body.get("status"))
        reason = body.get("reason")
        try:
            step = self.advance(
                body["order_id"],
                status if isinstance(status, str) else None,
                reason if isinstance(reason, str) else None,
            )
        except KeyError:
            return _validation_error([_unrecognized_order()])
        except ValueError:
            attr = "to" if "to" in body else "status"
            return _validation_error([{"attr": attr, "message": "unrecognized"}])
        return _success(200, step.order)

    def _control_webhooks(self, body: Mapping[str, Any] | None) -> Reply:
        """GET: the subscription's queue and delivery log. POST: {"pause": bool, "reverse":
        true, "resend": SEQ, "duplicates": N}, applied in that order, then the same report."""
        if self.webhooks is None:
            return _validation_error([{"attr": "webhooks", "message": "not_configured"}])
        if body is None:
            return _validation_error([{"attr": "body", "message": "invalid_json"}])
        sender = self.webhooks
        if body.get("pause") is True:
            sender.pause()
        if body.get("reverse") is True:
            sender.reverse()
        resend = body.get("resend")
        if isinstance(resend, int) and not isinstance(resend, bool):
            try:
                sender.resend(resend)
            except KeyError:
                return _validation_error([{"attr": "resend", "message": "unrecognized"}])
        duplicates = body.get("duplicates")
        if isinstance(duplicates, int) and not isinstance(duplicates, bool) and duplicates >= 0:
            sender.set_duplicates(duplicates)
        if body.get("pause") is False:
            sender.resume()
        return Reply(200, {"code": 200, "status": "action-successful", "data": sender.status()})

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
        self._publish(Step(order, "order.received"))
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
        self._publish(Step(order, "order.canceled"))
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
