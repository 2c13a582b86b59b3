"""Budgets (pure): which budgets an order falls under, their periods, and the verdict.

A budget caps the orders and/or the spend of a period:

- `billing_entity_slug` omitted: one budget shared by every entity (its scope is "*");
  `"*"`: every entity gets its own budget of that size (the scope is the order's entity);
  a slug: only that entity's orders, under their own budget.
- `period`: day, week or month of the calendar in the source time zone (`[source] timezone`).
  A day runs from local midnight to local midnight, so the days on which daylight saving time
  starts or ends last 23 or 25 hours; a week starts on Monday (ISO weeks); a month is the
  calendar month. An order counts in the period of its `budget_day`: the local date on which
  it was decided (or approved over a budget).
- `when_exceeded`: `hold` (the order waits in awaiting_approval, naming the budget) or `skip`
  (no order; audited as budget_exceeded; final for that readiness).

An order is admitted when, with it, every budget it falls under stays within its limits: with
`max_orders: 5`, five orders pass and the sixth is held or skipped. When several budgets are
exceeded, `skip` wins over `hold`, and the first budget in file order is named.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Literal

from propready.core.expressions import SourceLocation
from propready.core.pricing import usd

Period = Literal["day", "week", "month"]
WhenExceeded = Literal["hold", "skip"]
Outcome = Literal["ok", "hold", "skip"]
EACH_ENTITY = "*"
ALL_ENTITIES = "*"  # the scope (budget_periods row) of a budget shared by every entity


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    period: Period
    when_exceeded: WhenExceeded = "hold"
    billing_entity_slug: str | None = None  # None: all entities together; "*": each entity
    max_orders: int | None = None
    max_spend_cents: int | None = None
    location: SourceLocation | None = None

    def applies_to(self, entity: str) -> bool:
        return self.billing_entity_slug in (None, EACH_ENTITY, entity)

    def scope_for(self, entity: str) -> str:
        """The budget_periods row an order of `entity` counts under: "*" or the entity."""
        return ALL_ENTITIES if self.billing_entity_slug is None else entity

    def describe(self) -> str:
        """The budget in words, for explain, the audit log and error messages."""
        limits = []
        if self.max_orders is not None:
            limits.append(f"{self.max_orders} orders")
        if self.max_spend_cents is not None:
            limits.append(usd(self.max_spend_cents))
        who = {None: "all entities together", EACH_ENTITY: "each billing entity"}.get(
            self.billing_entity_slug, str(self.billing_entity_slug)
        )
        return f"{' and '.join(limits)} per {self.period} for {who}, then {self.when_exceeded}"


@dataclass(frozen=True, slots=True)
class PeriodWindow:
    """One period of the calendar in the source time zone."""

    period: Period
    key: str  # "day:2026-03-08", "week:2026-W10", "month:2026-03"
    first_day: date  # inclusive
    end_day: date  # exclusive
    starts_at: datetime  # UTC instant of local midnight at first_day
    ends_at: datetime  # UTC instant of local midnight at end_day


@dataclass(frozen=True, slots=True)
class Usage:
    """What a budget's scope already holds in a period: orders and their spend."""

    orders: int = 0
    spend_cents: int = 0


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """The budget decision for one order, and what to record with it.

    `outcome` is ok, hold or skip. `budget` names the budget that held or skipped it (None when a
    missing price held it, or all is ok); `reason` says why in words; `usage` is the period's
    use before this order. `day` is the order's budget_day.
    """

    outcome: Outcome
    day: date
    budget: Budget | None = None
    window: PeriodWindow | None = None
    usage: Usage | None = None
    reason: str = ""

    @property
    def held_by_budget(self) -> str | None:
        return self.budget.name if self.outcome == "hold" and self.budget is not None else None

    def detail(self) -> dict[str, Any]:
        """The verdict for the audit log (order_created of a held order, budget_exceeded)."""
        if self.outcome == "ok":
            return {}
        detail: dict[str, Any] = {"budget_outcome": self.outcome, "hold_reason": self.reason}
        if self.budget is not None and self.window is not None and self.usage is not None:
            detail.update(
                budget=self.budget.name,
                budget_limits=self.budget.describe(),
                period=self.window.key,
                period_starts_at=self.window.starts_at.isoformat(),
                period_ends_at=self.window.ends_at.isoformat(),
                period_orders=self.usage.orders,
                period_spend_cents=self.usage.spend_cents,
            )
            if self.outcome == "hold":
                detail["held_by_budget"] = self.budget.name
        return detail


def local_day(now: datetime, zone: tzinfo) -> date:
    """The calendar date in the source time zone at the instant `now`."""
    return now.astimezone(zone).date()


@functools.lru_cache(maxsize=256)  # called for every budget of every order: a few days recur
def period_bounds(period: Period, day: date) -> tuple[date, date, str]:
    """The local dates [first, end) of the `period` that contains `day`, and its key."""
    if period == "day":
        return day, day + timedelta(days=1), f"day:{day.isoformat()}"
    if period == "week":
        first = day - timedelta(days=day.weekday())  # Monday
        year, week, _ = first.isocalendar()
        return first, first + timedelta(days=7), f"week:{year}-W{week:02d}"
    first = day.replace(day=1)
    return first, (first + timedelta(days=32)).replace(day=1), f"month:{first:%Y-%m}"


@functools.lru_cache(maxsize=256)
def period_window(period: Period, day: date, zone: tzinfo) -> PeriodWindow:
    """The period of `period` kind that contains the local date `day`, with its UTC instants."""
    first, end, key = period_bounds(period, day)
    return PeriodWindow(period, key, first, end, _midnight(first, zone), _midnight(end, zone))


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def lock_keys(budgets: Sequence[Budget], entity: str, day: date) -> list[tuple[str, str]]:
    """The (scope, period key) rows an order of `entity` on `day` counts under, sorted.

    Every writer locks them in this order, so two writers never wait on each other in a cycle.
    """
    keys = {
        (b.scope_for(entity), period_bounds(b.period, day)[2])
        for b in budgets
        if b.applies_to(entity)
    }
    return sorted(keys)


def judge(
    budgets: Sequence[Budget],
    entity: str,
    cents: int,
    day: date,
    zone: tzinfo,
    usage: Mapping[tuple[str, str], Usage],
) -> BudgetVerdict:
    """ok, or the hold or skip of the first budget this order would overrun (skip first)."""
    exceeded: list[tuple[Budget, PeriodWindow, Usage]] = []
    for budget in budgets:
        if not budget.applies_to(entity):
            continue
        window = period_window(budget.period, day, zone)
        used = usage.get((budget.scope_for(entity), window.key), Usage())
        if _overruns(budget, used, cents):
            exceeded.append((budget, window, used))
    if not exceeded:
        return BudgetVerdict("ok", day)
    skips = [e for e in exceeded if e[0].when_exceeded == "skip"]
    budget, window, used = (skips or exceeded)[0]
    return BudgetVerdict(
        budget.when_exceeded, day, budget, window, used, _reason(budget, window, used, cents)
    )


def _overruns(budget: Budget, used: Usage, cents: int) -> bool:
    if budget.max_orders is not None and used.orders + 1 > budget.max_orders:
        return True
    return budget.max_spend_cents is not None and used.spend_cents + cents > budget.max_spend_cents


def _reason(budget: Budget, window: PeriodWindow, used: Usage, cents: int) -> str:
    parts = []
    if budget.max_orders is not None:
        parts.append(f"{used.orders} of {budget.max_orders} orders used")
    if budget.max_spend_cents is not None:
        parts.append(
            f"{usd(used.spend_cents)} of {usd(budget.max_spend_cents)} spent, "
            f"this order {usd(cents)}"
        )
    return f"budget {budget.name!r} ({budget.describe()}): {'; '.join(parts)} in {window.key}"


def price_hold(day: date, unpriced: Sequence[str]) -> BudgetVerdict:
    """The hold of an order with a service the catalog has no price for."""
    reason = f"no price in the catalog for {', '.join(unpriced)}; approve it or price it"
    return BudgetVerdict("hold", day, reason=reason)


@dataclass
class BudgetSimulation:
    """Budgets applied to a sequence of would-be orders in memory (for `propready simulate`).

    Starts from `usage` (what the state database holds now, if known) and counts each admitted
    order, as the daemon would if these orders were decided one after another now.
    """

    budgets: Sequence[Budget]
    day: date
    zone: tzinfo
    usage: dict[tuple[str, str], Usage]

    def admit(self, entity: str, cents: int) -> BudgetVerdict:
        verdict = judge(self.budgets, entity, cents, self.day, self.zone, self.usage)
        if verdict.outcome == "ok":
            for key in lock_keys(self.budgets, entity, self.day):
                used = self.usage.get(key, Usage())
                self.usage[key] = Usage(used.orders + 1, used.spend_cents + cents)
        return verdict
