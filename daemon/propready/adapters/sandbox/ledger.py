"""The vendor's side of the story: every order the sandbox accepted, safe to share between threads.

The ledger decides what needs stored orders (duplicates, unknown ids, cancelability) and raises a
named rejection; turning that into the vendor's error body is the caller's job, because some of the
wording (the duplicate keyword) is configuration.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from propready.adapters.sandbox.lifecycle import (
    HAPPY_PATH,
    STEP_ALIASES,
    UNABLE_TO_COMPLETE,
    apply_status,
    new_order_fields,
)
from propready.adapters.sandbox.validation import OrderRef

FIRST_ORDER_ID = 100001
FIRST_REQUEST_ID = 500001
NEW_ORDER_STATUS = "new_request"
CANCELED_STATUS = "canceled"
CANCELABLE_STATUSES = frozenset({"new_request", "ordered", "scheduling"})
# Both spellings occur in the vendor's own status filter; neither blocks a new order.
CANCELED_STATUSES = frozenset({"canceled", "cancelled"})
# fmt: off
KNOWN_STATUSES = frozenset({
    "assembly", "canceled", "cancelled", "committed", "completed", "hold", "new_request",
    "notified", "on_site", "ordered", "order_processing", "pending_appointment",
    "pending_reschedule", "post_processing", "ready_to_schedule", "scheduled", "scheduling",
    "submitted", "submitted_cancel_onsite", "unscheduled",
})
# fmt: on
# Steps /_sandbox/advance takes besides plain statuses.
STEPS = frozenset({UNABLE_TO_COMPLETE, *STEP_ALIASES})


class LedgerRejection(Exception):
    """The request is well-formed but the stored orders forbid it."""


class DuplicateOrder(LedgerRejection):
    """A live order for the same external_property_id is younger than the duplicate window."""


class UnknownOrder(LedgerRejection):
    """No order with that id exists for this api key."""


class NotCancelable(LedgerRejection):
    """The order has moved past the statuses in which the vendor still lets a client cancel."""


@dataclass
class _Entry:
    owner: str  # the api key that created the order; kept out of the order so it is never echoed
    created_at: datetime
    order: dict[str, Any]
    stepped_at: datetime  # its last status change, for --auto-advance


@dataclass(frozen=True)
class Step:
    """One status change: the order as it is now, and the webhook event it sends (if any)."""

    order: dict[str, Any]
    event: str | None


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        self._next_order_id = FIRST_ORDER_ID
        self._next_request_id = FIRST_REQUEST_ID

    def create(
        self,
        owner: str,
        request: Mapping[str, Any],
        now: datetime,
        duplicate_window: timedelta | None,
    ) -> dict[str, Any]:
        """Store a validated create request and return the stored order."""
        echo = {name: copy.deepcopy(value) for name, value in request.items() if name != "api_key"}
        with self._lock:
            # The duplicate check and the insert share one lock hold, so two concurrent creates
            # for the same property cannot both slip past the window.
            if duplicate_window is not None and self._has_live_order_since(
                owner, request.get("external_property_id"), now - duplicate_window
            ):
                raise DuplicateOrder
            order = {
                **echo,  # vendor-assigned fields come last so a client cannot forge them
                "order_id": self._next_order_id,
                "request_id": self._next_request_id,
                "legacy_order_id": None,
                "order_status": NEW_ORDER_STATUS,
                "created": now.astimezone(UTC).isoformat(timespec="milliseconds"),
                "event": "order.received",
                **new_order_fields(),
            }
            self._next_order_id += 1
            self._next_request_id += 1
            self._entries.append(_Entry(owner, now, order, now))
            return copy.deepcopy(order)

    def find(self, owner: str, ref: OrderRef) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._locate(owner, ref).order)

    def cancel(self, owner: str, ref: OrderRef, reason: str, notes: str) -> dict[str, Any]:
        with self._lock:
            order = self._locate(owner, ref).order
            if order["order_status"] not in CANCELABLE_STATUSES:
                raise NotCancelable
            order["order_status"] = CANCELED_STATUS
            order["cancelation_reason"] = reason
            order["cancelation_notes"] = notes
            order["order_cancelation_reason"] = reason
            order["order_cancelation_notes"] = notes
            order["event"] = "order.canceled"
            return copy.deepcopy(order)

    def progress(
        self,
        order_id: int,
        status: str | None,
        now: datetime,
        *,
        reason: str | None = None,
    ) -> Step:
        """Set `status` (or a step: unable_to_complete, delivered), or move one step along the
        usual path; the order and the event it sends. An order at the end of the path stays.

        KeyError for an unknown order, ValueError for an unknown status.
        """
        if status is not None and status not in KNOWN_STATUSES and status not in STEPS:
            raise ValueError(f"{status!r} is not a PlanOmatic order status")
        with self._lock:
            for entry in self._entries:
                if entry.order["order_id"] == order_id:
                    target = status or HAPPY_PATH.get(entry.order["order_status"])
                    if target is None:
                        return Step(copy.deepcopy(entry.order), None)
                    event = apply_status(entry.order, target, now, reason=reason)
                    entry.stepped_at = now
                    return Step(copy.deepcopy(entry.order), event)
        raise KeyError(order_id)

    def due_for_step(self, stepped_before: datetime) -> list[int]:
        """Orders on the usual path whose last step is older than `stepped_before`."""
        with self._lock:
            return [
                entry.order["order_id"]
                for entry in self._entries
                if entry.stepped_at <= stepped_before and entry.order["order_status"] in HAPPY_PATH
            ]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(entry.order) for entry in self._entries]

    def _locate(self, owner: str, ref: OrderRef) -> _Entry:
        # Orders of other api keys are invisible: to the caller they simply do not exist.
        for entry in self._entries:
            if entry.owner == owner and entry.order[ref.field] == ref.value:
                return entry
        raise UnknownOrder

    def _has_live_order_since(self, owner: str, external_property_id: Any, since: datetime) -> bool:
        return any(
            entry.owner == owner
            and entry.order.get("external_property_id") == external_property_id
            and entry.created_at > since
            and entry.order["order_status"] not in CANCELED_STATUSES
            for entry in self._entries
        )


class FixedWindowRateLimiter:
    """Counts requests per api key in fixed windows that start at a key's first request."""

    def __init__(self, limit: int, window_seconds: float) -> None:
        self._limit = limit
        self._window_seconds = window_seconds
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, requests)

    def allow(self, key: str, now: float) -> bool:
        if self._limit <= 0:
            return True
        with self._lock:
            started, count = self._windows.get(key, (now, 0))
            if now - started >= self._window_seconds:
                started, count = now, 0
            if count >= self._limit:
                return False
            self._windows[key] = (started, count + 1)
            return True
