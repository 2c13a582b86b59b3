"""Write-back of delivered orders to the PM system: the parameters, the states and the backoff.

The operator's `[writeback] statement` runs once per delivered order against `[writeback] url`
(design.md 8.2), through the `writeback_outbox` table:

    pending ──claim──> leased ──target committed, then state committed──> done
       ^                  │
       │                  └─ failed attempt ─> failed (due again at next_attempt_at)
       │                                          └─ failing for give_up_after_hours ─> given_up
       └──────────── `propready writeback retry ORDER --reason TEXT` (failed, given_up)

The statement runs in the target's own transaction, and the outbox row is marked done in the
state database afterwards: a crash between the two commits leaves the row leased, and once the
lease expires the statement runs again. So the statement must be idempotent by design (an
`UPDATE ... SET column = :photo_manage_link WHERE key = :external_property_id`, or an upsert
keyed by `:external_order_id`): running it twice has the effect of running it once.

Pure: no I/O; time and randomness are passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

# The statement's named parameters (design.md 8.2), in the order people read them.
PARAMETER_NAMES: tuple[str, ...] = (
    "external_property_id",
    "external_order_id",
    "vendor_order_id",
    "order_status",
    "delivered_at",
    "photo_manage_link",
    "zillow_3d_link",
    "photo_count",
)

MAX_ERROR_CHARS = 300  # last_error and the audit's reason: one line, clipped


class WritebackState(StrEnum):
    PENDING = "pending"  # waiting for its first attempt (or asked to be retried)
    LEASED = "leased"  # a worker is running the statement now (until lease_until)
    DONE = "done"  # written back; never run again
    FAILED = "failed"  # the last attempt failed; due again at next_attempt_at
    GIVEN_UP = "given_up"  # failed for give_up_after_hours: waits for a person


@dataclass(frozen=True, slots=True)
class WritebackParams:
    """What the statement may read about one delivered order: exactly its named parameters."""

    external_property_id: str
    external_order_id: str
    vendor_order_id: str | None
    order_status: str
    delivered_at: datetime  # aware; kept in UTC
    photo_manage_link: str | None
    zillow_3d_link: str | None
    photo_count: int | None

    def __post_init__(self) -> None:
        if self.delivered_at.tzinfo is None:
            raise ValueError("delivered_at must be an aware datetime (UTC)")
        object.__setattr__(self, "delivered_at", self.delivered_at.astimezone(UTC))
        if not self.external_property_id or not self.external_order_id:
            raise ValueError("external_property_id and external_order_id are required")
        if self.photo_count is not None and (
            isinstance(self.photo_count, bool) or self.photo_count < 0
        ):
            raise ValueError("photo_count must be a count (0 or more)")

    def to_json(self) -> dict[str, Any]:
        """The form stored in the outbox (JSON): delivered_at as ISO 8601 with +00:00."""
        return {
            "external_property_id": self.external_property_id,
            "external_order_id": self.external_order_id,
            "vendor_order_id": self.vendor_order_id,
            "order_status": self.order_status,
            "delivered_at": self.delivered_at.isoformat(),
            "photo_manage_link": self.photo_manage_link,
            "zillow_3d_link": self.zillow_3d_link,
            "photo_count": self.photo_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WritebackParams:
        count = data.get("photo_count")
        return cls(
            external_property_id=str(data["external_property_id"]),
            external_order_id=str(data["external_order_id"]),
            vendor_order_id=_text_or_none(data.get("vendor_order_id")),
            order_status=str(data["order_status"]),
            delivered_at=datetime.fromisoformat(str(data["delivered_at"])),
            photo_manage_link=_text_or_none(data.get("photo_manage_link")),
            zillow_3d_link=_text_or_none(data.get("zillow_3d_link")),
            photo_count=None if count is None else int(count),
        )

    def bind_values(self, *, datetime_as_text: bool) -> dict[str, Any]:
        """The values bound to the statement's parameters.

        `datetime_as_text` for drivers without a date-time type (SQLite): delivered_at is then
        ISO 8601 text with +00:00, which SQLite's date functions read.
        """
        values = self.to_json()
        if not datetime_as_text:
            values["delivered_at"] = self.delivered_at
        return values


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def statement_problem(parameters: Collection[str], statement_count: int) -> str | None:
    """Why a statement cannot be the write-back statement, or None when it can.

    `parameters` are the `:name` parameters found in it, `statement_count` how many statements
    it holds (the caller parses; this judges).
    """
    if statement_count == 0:
        return "is empty (only comments or semicolons)"
    if statement_count > 1:
        return f"must be a single statement, found {statement_count} separated by ';'"
    unknown = sorted(set(parameters) - set(PARAMETER_NAMES))
    if unknown:
        listed = ", ".join(f":{name}" for name in unknown)
        known = ", ".join(f":{name}" for name in PARAMETER_NAMES)
        return f"unknown parameter {listed} (known: {known})"
    if not parameters:
        return (
            "uses none of the named parameters, so it would write the same for every order "
            "(use :external_property_id, :photo_manage_link, ...)"
        )
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float
    max_seconds: float
    give_up_after: timedelta


def retry_delay(attempts: int, base: float, cap: float, jitter: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: exponential from `base`,
    capped at `cap`, scaled by `jitter` in [0, 1] to half..all of it (so workers spread out)."""
    exponent = min(max(0, attempts - 1), 60)
    ceiling = min(cap, base * math.pow(2, exponent))
    return ceiling / 2 + (ceiling / 2) * min(1.0, max(0.0, jitter))


def next_attempt_after_failure(
    now: datetime,
    first_failed_at: datetime | None,
    attempts: int,
    policy: RetryPolicy,
    jitter: float,
) -> datetime | None:
    """When to try again after a failed attempt at `now`, or None: give up.

    The give-up clock starts at the first failure of the current streak (`first_failed_at`,
    None when this is that failure), so an operator's retry gives a full period again.
    """
    since = first_failed_at or now
    if now - since >= policy.give_up_after:
        return None
    delay = retry_delay(attempts, policy.base_seconds, policy.max_seconds, jitter)
    return now + timedelta(seconds=delay)


def error_line(text: str, secrets: Collection[str] = ()) -> str:
    """The first non-empty line of a driver's message, secrets masked, clipped to one line."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    for secret in secrets:
        if secret:
            first = first.replace(secret, "***")
    # A URL's password: scheme://user:password@host
    first = re.sub(r"://([^:/@\s]+):[^@\s]*@", r"://\1:***@", first)
    first = " ".join(first.split()) or "no reason given"
    if len(first) > MAX_ERROR_CHARS:
        first = first[: MAX_ERROR_CHARS - 1] + "…"
    return first


def should_audit_failure(
    first_failed_at: datetime | None, previous_error: str | None, error: str, gave_up: bool
) -> bool:
    """A failed attempt is audited when it starts a streak of failures (`first_failed_at` is
    None: the first failure, or the first after a success-free retry request), says something
    new, or gives up.

    A target down for a day is retried a hundred times; the audit log (and the notifications
    built on it) hears of the outage once, of each new reason, and of the final failure.
    """
    return gave_up or first_failed_at is None or previous_error != error
