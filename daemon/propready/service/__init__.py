"""The service layer: the only place that sequences I/O.

One cycle is recover -> poll (events, decisions, outbox) -> send. Each step's state change and
its audit rows commit in one transaction; the vendor call sits between two commits
(reliability.md, atomic phases), so a crash anywhere leaves a state the recovery pass finishes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import structlog

from propready.adapters.source import SourceUnavailable
from propready.service.checkpoints import Tick, record_source_failure, source_backoff_over
from propready.service.components import Components, CycleSummary, Pacer
from propready.service.notify import notify_step
from propready.service.poll import poll
from propready.service.recovery import recover
from propready.service.send import send_due
from propready.service.status_sync import reconcile_statuses
from propready.service.vendor_news import apply_news
from propready.service.writeback import writeback_step

__all__ = [
    "Components",
    "CycleSummary",
    "Pacer",
    "notify_step",
    "poll",
    "poll_step",
    "recover",
    "run_cycle",
    "send_due",
    "writeback_step",
]

log = structlog.get_logger("propready.service")


def run_cycle(
    components: Components, now: Callable[[], datetime], *, respect_backoff: bool = True
) -> CycleSummary:
    """One cycle: recover, poll and decide, send what is due, apply the vendor's stored webhook
    deliveries, reconcile orders without news, write delivered orders back, then tell people what
    needs them (`propready run --once`).

    A source that cannot be read is reported in the summary, not raised: sending goes on.
    """
    summary = CycleSummary()
    started = time.monotonic()
    recover(components, now(), summary)
    poll_step(components, now, summary, respect_backoff=respect_backoff)
    send_due(components, now, summary)
    apply_news(components, now, summary)
    reconcile_statuses(components, now(), summary)
    writeback_step(components, now, summary)  # delivered orders written back to the PM system
    notify_step(components, now, summary)
    attention = summary.invalid or summary.rejected or summary.unknown  # a person must look
    (log.warning if attention else log.info)(
        "cycle", duration_ms=round((time.monotonic() - started) * 1000), **summary.as_dict()
    )
    return summary


def poll_step(
    components: Components,
    now: Callable[[], datetime],
    summary: CycleSummary,
    *,
    respect_backoff: bool = True,
    tick: Tick | None = None,
) -> None:
    """Poll unless the source's backoff says wait; a source outage is recorded, not raised."""
    if respect_backoff and not source_backoff_over(components, now()):
        summary.poll_skipped = True
        summary.source_error = "waiting out the backoff after earlier source failures"
        return
    try:
        poll(components, now, summary, tick=tick)
    except SourceUnavailable as exc:
        # The daemon keeps running: orders already decided are still sent, and the next
        # poll waits out a growing backoff (visible in `propready check` and the logs).
        summary.source_error = str(exc)
        failures = record_source_failure(components, str(exc), now())
        log.error("source_unavailable", error=str(exc), consecutive_failures=failures)
