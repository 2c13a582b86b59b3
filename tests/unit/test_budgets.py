"""Budgets in the pure core: periods in the source time zone, and the ok/hold/skip verdict."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from propready.core.budgets import (
    Budget,
    BudgetSimulation,
    Usage,
    judge,
    local_day,
    lock_keys,
    period_bounds,
    period_window,
)

DENVER = ZoneInfo("America/Denver")


def test_a_day_runs_from_local_midnight_to_local_midnight() -> None:
    """23:59:59 local belongs to the day before; 00:00 local starts the next (UTC-7 in winter)."""
    assert local_day(datetime(2026, 12, 2, 6, 59, 59, tzinfo=UTC), DENVER) == date(2026, 12, 1)
    assert local_day(datetime(2026, 12, 2, 7, 0, tzinfo=UTC), DENVER) == date(2026, 12, 2)
    window = period_window("day", date(2026, 12, 2), DENVER)
    assert window.key == "day:2026-12-02"
    assert window.starts_at == datetime(2026, 12, 2, 7, tzinfo=UTC)
    assert window.ends_at == datetime(2026, 12, 3, 7, tzinfo=UTC)


def test_daylight_saving_days_last_23_and_25_hours() -> None:
    """Denver springs forward on 2026-03-08 (23 h) and falls back on 2026-11-01 (25 h)."""
    spring = period_window("day", date(2026, 3, 8), DENVER)
    assert (spring.starts_at, spring.ends_at) == (
        datetime(2026, 3, 8, 7, tzinfo=UTC),
        datetime(2026, 3, 9, 6, tzinfo=UTC),
    )
    assert spring.ends_at - spring.starts_at == timedelta(hours=23)
    autumn = period_window("day", date(2026, 11, 1), DENVER)
    assert autumn.ends_at - autumn.starts_at == timedelta(hours=25)
    # The last local minute of the short day is 05:59 UTC; 06:00 UTC is already the next day.
    assert local_day(datetime(2026, 3, 9, 5, 59, tzinfo=UTC), DENVER) == date(2026, 3, 8)
    assert local_day(datetime(2026, 3, 9, 6, 0, tzinfo=UTC), DENVER) == date(2026, 3, 9)
    # The long day: 06:00 UTC is 00:00 MDT, 06:59 UTC on Nov 2 is still 23:59 MST on Nov 1.
    assert local_day(datetime(2026, 11, 1, 6, 0, tzinfo=UTC), DENVER) == date(2026, 11, 1)
    assert local_day(datetime(2026, 11, 2, 6, 59, tzinfo=UTC), DENVER) == date(2026, 11, 1)


@pytest.mark.parametrize(
    ("period", "day", "expected"),
    [
        ("week", date(2026, 12, 6), (date(2026, 11, 30), date(2026, 12, 7), "week:2026-W49")),
        ("week", date(2026, 11, 30), (date(2026, 11, 30), date(2026, 12, 7), "week:2026-W49")),
        ("week", date(2027, 1, 1), (date(2026, 12, 28), date(2027, 1, 4), "week:2026-W53")),
        ("month", date(2026, 12, 31), (date(2026, 12, 1), date(2027, 1, 1), "month:2026-12")),
        ("month", date(2026, 2, 1), (date(2026, 2, 1), date(2026, 3, 1), "month:2026-02")),
    ],
)
def test_weeks_start_on_monday_and_months_are_calendar_months(
    period: str, day: date, expected: tuple[date, date, str]
) -> None:
    """A Sunday belongs to the week of the Monday before it; ISO week numbers name weeks."""
    assert period_bounds(period, day) == expected  # type: ignore[arg-type]


def test_the_budget_admits_exactly_its_size() -> None:
    """With max_orders 5, the 5th order is ok and the 6th held, naming the budget and its use."""
    budget = Budget("cap", "day", "hold", max_orders=5)
    day = date(2026, 12, 1)
    key = ("*", "day:2026-12-01")
    assert judge([budget], "e1", 100, day, DENVER, {key: Usage(4, 400)}).outcome == "ok"
    held = judge([budget], "e1", 100, day, DENVER, {key: Usage(5, 500)})
    assert (held.outcome, held.held_by_budget) == ("hold", "cap")
    assert "5 of 5 orders used" in held.reason
    assert held.detail()["period_starts_at"] == "2026-12-01T07:00:00+00:00"


def test_spend_counts_this_order_too() -> None:
    """max_spend: an order that would pass the limit is refused, one that reaches it is not."""
    budget = Budget("money", "month", "skip", max_spend_cents=100_000)
    key = ("*", "month:2026-12")
    day = date(2026, 12, 1)
    assert judge([budget], "e", 25_000, day, UTC, {key: Usage(3, 75_000)}).outcome == "ok"
    skipped = judge([budget], "e", 25_001, day, UTC, {key: Usage(3, 75_000)})
    assert skipped.outcome == "skip"
    assert skipped.held_by_budget is None  # a skip inserts nothing
    assert "$750.00 of $1,000.00 spent, this order $250.01" in skipped.reason


def test_scopes_each_entity_all_entities_and_one_entity() -> None:
    """ "*" gives each entity its own row, no key one shared row, a slug only that entity's."""
    each = Budget("each", "month", max_orders=1, billing_entity_slug="*")
    shared = Budget("all", "day", max_orders=9)
    only_b = Budget("b-only", "week", max_orders=1, billing_entity_slug="b")
    day = date(2026, 12, 2)
    assert lock_keys([each, shared, only_b], "a", day) == [
        ("*", "day:2026-12-02"),
        ("a", "month:2026-12"),
    ]
    assert lock_keys([each, shared, only_b], "b", day) == [
        ("*", "day:2026-12-02"),
        ("b", "month:2026-12"),
        ("b", "week:2026-W49"),
    ]
    usage = {("a", "month:2026-12"): Usage(1, 0)}
    assert judge([each], "a", 0, day, UTC, usage).outcome == "hold"
    assert judge([each], "b", 0, day, UTC, usage).outcome == "ok"  # b has its own budget


def test_skip_wins_over_hold_and_the_first_budget_is_named() -> None:
    """Two budgets exceeded: the skipping one decides; among holds, the first in file order."""
    hold_a = Budget("hold-a", "day", "hold", max_orders=0)
    hold_b = Budget("hold-b", "month", "hold", max_orders=0)
    skip = Budget("skip", "week", "skip", max_orders=0)
    day = date(2026, 12, 2)
    assert judge([hold_a, hold_b, skip], "e", 0, day, UTC, {}).budget == skip
    assert judge([hold_a, hold_b], "e", 0, day, UTC, {}).budget == hold_a


def test_simulation_counts_what_it_admits() -> None:
    """A simulated run admits orders until the budget is full, then holds the rest."""
    simulation = BudgetSimulation([Budget("cap", "day", max_orders=2)], date(2026, 12, 2), UTC, {})
    outcomes = [simulation.admit("e", 100).outcome for _ in range(4)]
    assert outcomes == ["ok", "ok", "hold", "hold"]
