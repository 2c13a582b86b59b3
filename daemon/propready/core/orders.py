"""The order outbox's states and the rules that move orders between them (pure: no I/O, no clock).

planned ──lease──> sending ──201──> placed ──sync──> (vendor statuses) / canceled
   ^                  │ 429, refused ─> planned (backoff) ─> ... ─> failed (gave up)
   │                  │ 400 ─────────> rejected (final)
   │                  └ 5xx, timeout, dropped, crash ─> unknown, or planned again when the
   │                                    vendor's duplicate protection covers a re-send
awaiting_approval ──approve──┘
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from propready.core.pricing import spend_cents


class OrderState(StrEnum):
    PLANNED = "planned"  # written with its decision; not yet sent
    AWAITING_APPROVAL = "awaiting_approval"  # mode approval: waits for `orders approve`
    SENDING = "sending"  # leased by one sender; the POST may be in flight
    PLACED = "placed"  # the vendor accepted it (vendor_status tracks its life there)
    REJECTED = "rejected"  # HTTP 400: final
    FAILED = "failed"  # gave up after retrying what provably never reached the vendor
    UNKNOWN = "unknown"  # ambiguous outcome: may exist at the vendor; an operator decides
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class Order:
    """One row of the order outbox, typed (built from a database row with `from_row`)."""

    id: int
    external_order_id: str
    external_property_id: str
    billing_entity_slug: str
    state: OrderState
    created_at: datetime
    window_end: datetime
    updated_at: datetime
    event_id: int | None = None
    rule_id: str | None = None
    rules_version: str | None = None
    vendor_status: str | None = None
    vendor_order_id: str | None = None
    vendor_request_id: str | None = None
    # The create request body without the api_key (holds the access code: never shown).
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False)
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    ambiguous_at: datetime | None = None
    status_checked_at: datetime | None = None
    estimated_price_cents: int | None = None
    price_estimated: bool = False
    vendor_price_cents: int | None = None
    budget_day: date | None = None
    held_by_budget: str | None = None
    # The lifecycle (migration 0013): last news from the vendor, the event time of the status
    # held, and when the vendor delivered.
    vendor_news_at: datetime | None = None
    vendor_status_at: datetime | None = None
    delivered_at: datetime | None = None

    @property
    def spend_cents(self) -> int:
        """What the order counts for: the vendor's price, else the estimate (pricing.py)."""
        return spend_cents(self.estimated_price_cents, self.vendor_price_cents)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Order:
        """From a row of the `orders` table; columns this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        values["id"] = int(values["id"])
        values["state"] = OrderState(values["state"])
        values["attempts"] = int(values.get("attempts") or 0)
        values["price_estimated"] = bool(values.get("price_estimated") or False)
        if isinstance(values.get("budget_day"), str):  # SQLite through a raw query
            values["budget_day"] = date.fromisoformat(values["budget_day"])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The columns as a mapping (for the CLI's tables) and the spend; no payload."""
        columns = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "payload"}
        return {**columns, "spend_cents": self.spend_cents}


# States that free the duplicate window: no live vendor order exists for them. Everything else
# holds it, so a state added later holds the window until someone decides otherwise (fail closed).
# Migration 0002 writes the same list into the PostgreSQL exclusion constraint and the SQLite
# trigger; a test checks that they agree.
FREES_WINDOW = frozenset({OrderState.REJECTED, OrderState.FAILED, OrderState.CANCELED})
HOLDS_WINDOW = frozenset(set(OrderState) - FREES_WINDOW)
FINAL = FREES_WINDOW

# Vendor statuses (planomatic-api.md 2.1) after which nothing changes any more: status sync stops.
VENDOR_FINAL_STATUSES = frozenset({"completed", "canceled", "cancelled", "submitted_cancel_onsite"})
# Placed orders still moving at the vendor, as literal SQL: the predicate of the partial index
# ix_orders_open_at_vendor (migration 0016) and of the queries that use it. Literal, not bound
# parameters: PostgreSQL proves that a query may use a partial index only from constants, and a
# prepared statement's generic plan has none.
OPEN_AT_VENDOR_SQL = (
    "state = 'placed' AND (vendor_status IS NULL OR vendor_status NOT IN ("
    + ", ".join(f"'{status}'" for status in sorted(VENDOR_FINAL_STATUSES))
    + "))"
)
VENDOR_CANCELED_STATUSES = frozenset({"canceled", "cancelled", "submitted_cancel_onsite"})
# The vendor lets a client cancel only in these statuses [doc]; later, support must be emailed.
CANCELABLE_VENDOR_STATUSES = frozenset({"new_request", "ordered", "scheduling"})
CANCEL_REASONS = ("duplicate_order", "client_requested_cancelation")
MAX_CANCEL_NOTES = 255


class CancelRefused(ValueError):
    """The order cannot be canceled now; the message says why and what to do instead."""


def check_cancel_request(reason: str, notes: str) -> None:
    """The contract's cancel fields: a known reason and notes of 1 to 255 characters."""
    if reason not in CANCEL_REASONS:
        raise CancelRefused(f"reason must be one of {', '.join(CANCEL_REASONS)}, not {reason!r}")
    if not notes.strip():
        raise CancelRefused("notes are required (1 to 255 characters)")
    if len(notes) > MAX_CANCEL_NOTES:
        raise CancelRefused(f"notes are {len(notes)} characters; the vendor accepts at most 255")


def cancel_route(order: Order) -> str:
    """How to cancel this order: `local` (never sent), `vendor` (ask PlanOmatic), or refuse."""
    state = order.state
    if state in (OrderState.PLANNED, OrderState.AWAITING_APPROVAL):
        return "local"
    if state is OrderState.PLACED:
        status = order.vendor_status
        if order.vendor_order_id is None:
            raise CancelRefused(
                "the vendor's order id is unknown (placed via its duplicate protection); "
                "cancel it in PlanOmatic's portal, then run `propready orders resolve`"
            )
        if status is not None and status not in CANCELABLE_VENDOR_STATUSES:
            raise CancelRefused(
                f"PlanOmatic status is {status!r}; the API cancels only in "
                f"{', '.join(sorted(CANCELABLE_VENDOR_STATUSES))}: email PlanOmatic support"
            )
        return "vendor"
    if state is OrderState.SENDING:
        raise CancelRefused("the order is being sent right now; retry in a minute")
    if state is OrderState.UNKNOWN:
        raise CancelRefused(
            "the outcome of sending is unknown; find the order in PlanOmatic's portal and run "
            "`propready orders resolve` first"
        )
    raise CancelRefused(f"the order is already {state.value}")


def resend_is_covered(
    created_at: datetime, now: datetime, vendor_protection_hours: float, margin: timedelta
) -> bool:
    """True when PlanOmatic's own duplicate check would refuse a second copy of this order.

    The first copy reached the vendor no earlier than `created_at`, so while `now` is inside the
    vendor's threshold counted from then (less a margin for clock skew), a re-send cannot create
    a second order: either it is the first to arrive, or the vendor answers `duplicate`.
    """
    if vendor_protection_hours <= 0:
        return False
    return now - created_at < timedelta(hours=vendor_protection_hours) - margin


def is_duplicate_answer(field_errors: list[tuple[str, str]]) -> bool:
    """The vendor's duplicate-protection refusal; its keyword is not public, so match loosely."""
    return any(
        attr == "external_property_id" and "duplicate" in message.lower()
        for attr, message in field_errors
    )
