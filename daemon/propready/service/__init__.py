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

from propready.service.components import Components, CycleSummary, Pacer
from propready.service.poll import poll
from propready.service.recovery import recover
from propready.service.send import send_due

__all__ = ["Components", "CycleSummary", "Pacer", "poll", "recover", "run_cycle", "send_due"]

log = structlog.get_logger("propready.service")


def run_cycle(components: Components, now: Callable[[], datetime]) -> CycleSummary:
    """One full cycle: recover, poll and decide, then send what is due."""
    summary = CycleSummary()
    started = time.monotonic()
    recover(components, now(), summary)
    poll(components, now, summary)
    send_due(components, now, summary)
    log.info("cycle", duration_ms=round((time.monotonic() - started) * 1000), **summary.as_dict())
    return summary
