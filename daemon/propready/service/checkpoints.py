"""The poll's checkpoint: when polls run, whether they are full, and the source's health
(consecutive failures and the backoff they impose).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from propready.adapters.store import audit, properties
from propready.core.audit_kinds import AuditKind
from propready.core.checkpoint import Checkpoint
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
    source: SourceSettings, checkpoint: Checkpoint, now: datetime, tick: Tick
) -> TickPlan:
    """Whether a scheduled poll runs (another host may have done it) and whether it is full."""
    incremental_ready = source.cursor_column is not None and checkpoint.cursor is not None
    if tick == "full":
        last, interval = checkpoint.last_full_pass_at, source.full_scan_interval_seconds
    else:
        last, interval = checkpoint.last_poll_at, source.poll_interval_seconds
    if last is not None and now - last < timedelta(seconds=interval * TICK_SHARE):
        kind = "full pass" if tick == "full" else "poll"
        return TickPlan(f"a {kind} started at {last.isoformat()} covers this tick", False)
    return TickPlan(None, tick == "full" or not incremental_ready)


def full_pass_due(source: SourceSettings, checkpoint: Checkpoint, now: datetime) -> bool:
    if source.cursor_column is None or checkpoint.cursor is None:
        return True
    last_full = checkpoint.last_full_pass_at
    return last_full is None or now - last_full >= timedelta(
        seconds=source.full_scan_interval_seconds
    )


def backoff_over(source: SourceSettings, checkpoint: Checkpoint, now: datetime) -> bool:
    """After failed polls, wait poll_interval * 2^(failures-1), at most an hour, before the next."""
    failures = checkpoint.consecutive_failures
    last = checkpoint.last_poll_at
    if failures == 0 or last is None:
        return True
    wait = min(3600.0, source.poll_interval_seconds * 2 ** min(failures - 1, 16))
    return now - last >= timedelta(seconds=wait)


def record_source_failure(components: Components, error: str, now: datetime) -> int:
    """Remember a failed poll (for backoff and health); return the consecutive failure count."""
    with components.state.begin() as connection:
        checkpoint = properties.load_checkpoint(connection, CHECKPOINT)
        failures = checkpoint.consecutive_failures + 1
        properties.save_checkpoint(
            connection,
            CHECKPOINT,
            last_poll_at=now,
            last_error=error,
            consecutive_failures=failures,
        )
        if failures == 1:  # once per outage: the first failure opens it
            audit.record(
                connection,
                AuditKind.SOURCE_UNAVAILABLE,
                now,
                detail={"error": error, "retry": "with backoff, from the poll interval up to 1 h"},
            )
    return failures


def source_backoff_over(components: Components, now: datetime) -> bool:
    with components.state.begin() as connection:
        checkpoint = properties.load_checkpoint(connection, CHECKPOINT)
    return backoff_over(components.settings.source, checkpoint, now)
