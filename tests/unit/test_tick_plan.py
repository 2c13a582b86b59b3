"""Scheduled polls on several hosts: one poll per tick between them, full passes on their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from propready.core.checkpoint import Checkpoint
from propready.service.checkpoints import plan_tick
from propready.settings import SourceSettings

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SOURCE = SourceSettings(
    url="sqlite:///pm.db",
    query="SELECT 1",
    cursor_column="updated_at",
    poll_interval_seconds=300,
    full_scan_interval_seconds=21600,
)


def _checkpoint(**values: Any) -> Checkpoint:
    return Checkpoint("source", cursor=NOW, **values)


def test_a_poll_another_host_started_within_the_interval_covers_the_tick() -> None:
    plan = plan_tick(SOURCE, _checkpoint(last_poll_at=NOW - timedelta(seconds=100)), NOW, "poll")
    assert plan.skip_reason is not None
    assert "covers this tick" in plan.skip_reason


def test_a_poll_runs_once_most_of_the_interval_has_passed() -> None:
    plan = plan_tick(SOURCE, _checkpoint(last_poll_at=NOW - timedelta(seconds=271)), NOW, "poll")
    assert plan.skip_reason is None
    assert plan.full_pass is False  # incremental: the cursor is known


def test_the_first_poll_is_a_full_pass() -> None:
    plan = plan_tick(SOURCE, Checkpoint("source"), NOW, "poll")
    assert plan.skip_reason is None
    assert plan.full_pass is True


def test_full_pass_ticks_follow_the_last_full_pass_on_any_host() -> None:
    recent = _checkpoint(last_full_pass_at=NOW - timedelta(hours=1))
    assert plan_tick(SOURCE, recent, NOW, "full").skip_reason is not None
    due = _checkpoint(last_full_pass_at=NOW - timedelta(hours=6))
    plan = plan_tick(SOURCE, due, NOW, "full")
    assert plan.skip_reason is None
    assert plan.full_pass is True


def test_without_a_cursor_column_every_poll_is_full() -> None:
    source = SourceSettings(url="sqlite:///pm.db", query="SELECT 1")
    plan = plan_tick(source, Checkpoint("source"), NOW, "poll")
    assert plan.full_pass is True
