"""The poll's checkpoint: the incremental cursor, when the last full pass ran, and the source's
health (consecutive failures and the backoff they impose).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from propready.adapters.store import properties
from propready.service.components import Components
from propready.settings import SourceSettings

CHECKPOINT = "source"

# The daemon's two poll jobs. "poll" reads what changed since the cursor (a full pass only when
# there is no cursor yet); "full" re-reads everything on the full-scan interval.
Tick = Literal["poll", "full"]
# A host skips a tick when any host started that kind of poll within this share of its interval:
# hosts with drifting schedules then poll about once per interval between them, never twice.
TICK_SHARE = 0.9


@dataclass(frozen=True)
class TickPlan:
    skip_reason: str | None
    full_pass: bool


def plan_tick(
    source: SourceSettings, checkpoint: Mapping[str, Any], now: datetime, tick: Tick
) -> TickPlan:
    """Whether a scheduled poll runs (another host may have done it) and whether it is full."""
    incremental_ready = (
        source.cursor_column is not None and checkpoint.get("cursor_value") is not None
    )
    if tick == "full":
        last, interval = checkpoint.get("last_full_pass_at"), source.full_scan_interval_seconds
    else:
        last, interval = checkpoint.get("last_poll_at"), source.poll_interval_seconds
    if last is not None and now - last < timedelta(seconds=interval * TICK_SHARE):
        kind = "full pass" if tick == "full" else "poll"
        return TickPlan(f"a {kind} started at {last.isoformat()} covers this tick", False)
    return TickPlan(None, tick == "full" or not incremental_ready)


def record_source_failure(components: Components, error: str, now: datetime) -> int:
    """Remember a failed poll (for backoff and health); return the consecutive failure count."""
    with components.state.begin() as connection:
        checkpoint = properties.load_checkpoint(connection, CHECKPOINT)
        failures = int(checkpoint.get("consecutive_failures") or 0) + 1
        properties.save_checkpoint(
            connection,
            CHECKPOINT,
            last_poll_at=now,
            last_error=error,
            consecutive_failures=failures,
        )
    return failures


def source_backoff_over(components: Components, now: datetime) -> bool:
    """After failed polls, wait poll_interval * 2^(failures-1), at most an hour, before the next."""
    with components.state.begin() as connection:
        checkpoint = properties.load_checkpoint(connection, CHECKPOINT)
    failures = int(checkpoint.get("consecutive_failures") or 0)
    last = checkpoint.get("last_poll_at")
    if failures == 0 or last is None:
        return True
    interval = components.settings.source.poll_interval_seconds
    wait = min(3600.0, interval * 2 ** min(failures - 1, 16))
    return bool(now - last >= timedelta(seconds=wait))


def full_pass_due(components: Components, checkpoint: Mapping[str, Any], now: datetime) -> bool:
    source = components.settings.source
    if source.cursor_column is None or checkpoint.get("cursor_value") is None:
        return True
    last_full = checkpoint.get("last_full_pass_at")
    return last_full is None or now - last_full >= timedelta(
        seconds=source.full_scan_interval_seconds
    )


def advance_cursor_to_max(connection: sa.Connection, value: Any) -> None:
    current = decode_cursor(properties.load_checkpoint(connection, CHECKPOINT)["cursor_value"])
    try:
        larger = current is None or value > current
    except TypeError:
        larger = True
    if larger:
        properties.save_checkpoint(connection, CHECKPOINT, cursor_value=encode_cursor(value))


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
