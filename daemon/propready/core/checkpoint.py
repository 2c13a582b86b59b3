"""The poll's checkpoint as a typed record, and the cursor arithmetic (pure).

The checkpoint remembers how far incremental polls have read (`cursor`, the largest cursor
value read), when the last full pass ran, and the source's health. Cursor values are whatever
the source returns for `cursor_column`: aware timestamps, dates, numbers, or ISO text (SQLite).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One row of `source_checkpoint`, with the cursor decoded to the source's own type."""

    name: str
    cursor: Any = None
    last_full_pass_at: datetime | None = None
    last_poll_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Checkpoint:
        """From a row whose `cursor_value` is already JSON-decoded (the store decodes it)."""
        return cls(
            name=str(row["name"]),
            cursor=decode_cursor(row.get("cursor_value")),
            last_full_pass_at=row.get("last_full_pass_at"),
            last_poll_at=row.get("last_poll_at"),
            last_success_at=row.get("last_success_at"),
            last_error=row.get("last_error"),
            consecutive_failures=int(row.get("consecutive_failures") or 0),
        )


def encode_cursor(value: Any) -> Any:
    """A cursor value as JSON: timestamps and dates keep their type."""
    if isinstance(value, datetime):
        return {"timestamp": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, int | float | str):
        return value
    return str(value)


def decode_cursor(value: Any) -> Any:
    if isinstance(value, dict) and "timestamp" in value:
        return datetime.fromisoformat(value["timestamp"])
    if isinstance(value, dict) and "date" in value:
        return date.fromisoformat(value["date"])
    return value


def minus_overlap(since: Any, overlap_seconds: int) -> Any:
    """Step the cursor back by the overlap window, so late commits and equal values are re-read."""
    if isinstance(since, datetime):
        return since - timedelta(seconds=overlap_seconds)
    if isinstance(since, date):
        return since - timedelta(days=1)
    if isinstance(since, str):
        # ISO text timestamps (SQLite) compare as text; step back by re-parsing when possible.
        try:
            parsed = datetime.fromisoformat(since)
        except ValueError:
            return since
        separator = since[10] if len(since) > 10 else "T"  # keep the source's text format
        return (parsed - timedelta(seconds=overlap_seconds)).isoformat(sep=separator)
    return since


def cursor_instant(value: Any, zone: Any) -> datetime | None:
    """The moment a cursor value stands for, when it is a time (for the future-value check)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=zone)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except (ValueError, OverflowError):
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)
    return None


def larger(current: Any, candidate: Any) -> Any:
    """The larger of two cursor values; a value of another type than the current one wins
    (the source's column type changed, so the old value means nothing any more)."""
    if current is None:
        return candidate
    try:
        return candidate if candidate > current else current
    except TypeError:
        return candidate


@dataclass(slots=True)
class CursorTracker:
    """The largest sensible cursor value a poll has read, and the values it refused.

    A value later than `latest_allowed` (now plus a tolerance) is a data error, such as a
    `9999-12-31` placeholder: taking it as the checkpoint would make every later incremental poll
    read nothing. Such values do not move the checkpoint; the rows are processed all the same.
    """

    latest_allowed: datetime
    zone: Any
    maximum: Any = None

    def offer_all(self, values: Sequence[Any]) -> None:
        """Take every cursor value of a batch. The batch's largest value is tried first: when it
        counts, every smaller one would too, and it is the only one that can move the maximum;
        otherwise (a placeholder among them) each value is taken on its own."""
        present = [value for value in values if value is not None]
        if not present:
            return
        try:
            largest = max(present)
        except TypeError:  # values of several types: one at a time
            largest = None
        if largest is not None and self.counts(largest):
            self.maximum = larger(self.maximum, largest)
            return
        for value in present:
            self.offer(value)

    def counts(self, value: Any) -> bool:
        """Whether a cursor value may move the checkpoint (see `offer`), without taking it."""
        if value is None:
            return True
        if isinstance(value, float | Decimal) and not math.isfinite(value):
            return False
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            return True
        instant = cursor_instant(value, self.zone)
        return instant is not None and instant <= self.latest_allowed

    def offer(self, value: Any) -> bool:
        """Take a cursor value read; False when it cannot count: too far in the future, text
        that is not a date or timestamp (it would compare as text), or a NaN."""
        if value is None:
            return True
        if isinstance(value, float | Decimal) and not math.isfinite(value):
            return False
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            self.maximum = larger(self.maximum, value)
            return True
        instant = cursor_instant(value, self.zone)
        if instant is None or instant > self.latest_allowed:
            return False
        self.maximum = larger(self.maximum, value)
        return True
