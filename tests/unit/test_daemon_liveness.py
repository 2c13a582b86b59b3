"""The watchdog's rule: ping only while some job has finished within the stall limit."""

from __future__ import annotations

from datetime import UTC, datetime

from propready.runtime.daemon import Liveness, status_line
from propready.service import CycleSummary


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_watchdog_starves_once_no_job_finished_within_the_limit() -> None:
    clock = FakeMonotonic()
    liveness = Liveness(stall_seconds=600, clock=clock)
    clock.now += 599
    assert liveness.alive()
    clock.now += 2
    assert not liveness.alive()
    liveness.progressed()  # a job finished (or a send loop moved on to the next order)
    assert liveness.alive()


def test_thestatus_line_summarises_the_last_poll() -> None:
    at = datetime(2026, 11, 27, 15, 4, 5, tzinfo=UTC)
    summary = CycleSummary(rows=300, events=4, orders_created=3)
    assert status_line(summary, at) == "poll at 15:04:05Z: 300 rows, 4 events, 3 orders planned"
    failed = CycleSummary(full_pass=True, source_error="connection refused")
    assert status_line(failed, at) == "full pass at 15:04:05Z failed: connection refused"
