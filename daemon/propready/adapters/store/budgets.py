"""Budgets in the state database: lock the period rows, recount, decide, in the order's transaction.

The mechanism (wave-2 anchors, section 3), for each order about to be inserted:

1. upsert the (scope, period key) rows of every budget the order falls under into
   `budget_periods`, in sorted key order, taking their row locks (the upsert's DO UPDATE takes
   the same lock a SELECT ... FOR UPDATE would, in one round trip);
2. recount the period's orders and spend from `orders` (a statement that starts after the locks
   are held, so under READ COMMITTED it sees every order committed by the previous holder);
3. decide (core/budgets.py), and let the caller insert, still holding the locks until commit.

Racing writers on any process or host therefore take turns per scope and period, and the
N-th order of a budget of N is the last one admitted. Nothing is ever decremented: canceled,
rejected and failed orders give their share back because the recount leaves them out, and so
are orders held by a budget (they have not been admitted). On SQLite the rows are written but
the locking is BEGIN IMMEDIATE's: one writer at a time (adapters/store/engine.py).

Lock order, to stay free of deadlocks: budget rows (sorted) -> the order insert (the duplicate
window's constraint) -> the audit chain head (taken by the first audit row a transaction
appends, which the poll's buffer writes at the end of its batch). `orders approve` follows the
same order. A transaction that has locked its rows keeps them (this module remembers them per
transaction and does not lock them again); don't call check_and_lock inside a savepoint you
might roll back, since that would release the locks taken in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from propready.adapters.store.schema import budget_periods, orders
from propready.core.budgets import (
    ALL_ENTITIES,
    Budget,
    BudgetVerdict,
    Usage,
    judge,
    local_day,
    lock_keys,
    period_bounds,
    price_hold,
)
from propready.core.orders import FREES_WINDOW, Order, OrderState
from propready.core.planning import OrderPlan

# Orders that never count: nothing was (or will be) bought for them.
_GIVEN_BACK = sorted(s.value for s in FREES_WINDOW)
_LOCKS_KEY = "propready_budget_locks"
_SPEND = sa.func.coalesce(orders.c.vendor_price_cents, orders.c.estimated_price_cents, 0)

Key = tuple[str, str]


def check_and_lock(
    connection: sa.Connection,
    plan: OrderPlan,
    budgets: Sequence[Budget],
    now: datetime,
    zone: tzinfo,
) -> BudgetVerdict:
    """The budget verdict for inserting `plan` now, with its budget rows locked until commit.

    ok: insert it as usual; hold: insert it in awaiting_approval with `held_by_budget`
    (verdict.held_by_budget; None for a hold because a service has no price); skip: do not insert
    it, audit budget_exceeded. `verdict.day` is the order's budget_day in every case.
    """
    day = local_day(now, zone)
    entity = plan.billing_entity_slug
    mine = [b for b in budgets if b.applies_to(entity)]
    if mine:
        usage = lock_and_count(connection, mine, entity, day, now)
        verdict = judge(mine, entity, plan.estimated_price_cents or 0, day, zone, usage)
        if verdict.outcome != "ok":
            return verdict
    if plan.unpriced_services and not plan.allow_unpriced:
        return price_hold(day, plan.unpriced_services)
    return BudgetVerdict("ok", day)


def recheck_for_approval(
    connection: sa.Connection,
    order: Order,
    budgets: Sequence[Budget],
    now: datetime,
    zone: tzinfo,
) -> BudgetVerdict:
    """Would the budgets admit this held order now? Locks the rows like check_and_lock.

    An approved order counts in the period of its approval: the caller stores `verdict.day`.
    """
    day = local_day(now, zone)
    entity = order.billing_entity_slug
    mine = [b for b in budgets if b.applies_to(entity)]
    if not mine:
        return BudgetVerdict("ok", day)
    usage = lock_and_count(connection, mine, entity, day, now)
    return judge(mine, entity, order.spend_cents, day, zone, usage)


def lock_and_count(
    connection: sa.Connection,
    budgets: Sequence[Budget],
    entity: str,
    day: date,
    now: datetime,
) -> dict[Key, Usage]:
    """Lock the budget rows of an order of `entity` on `day`, then count what they hold."""
    keys = lock_keys(budgets, entity, day)
    _lock(connection, keys, now)
    return _count(connection, budgets, entity, day)


def _lock(connection: sa.Connection, keys: Sequence[Key], now: datetime) -> None:
    held = _locks_held(connection)
    missing = [key for key in keys if key not in held]
    if not missing:
        return
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = insert(budget_periods).values(
        [{"scope": scope, "period_key": key, "last_locked_at": now} for scope, key in missing]
    )
    # Rows are inserted or updated (and so locked) in VALUES order: the sorted order.
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["scope", "period_key"],
            set_={"last_locked_at": statement.excluded.last_locked_at},
        )
    )
    held.update(missing)


def _locks_held(connection: sa.Connection) -> set[Key]:
    """The rows this transaction has locked already (an empty set inside a savepoint)."""
    transaction = connection.get_transaction()
    if transaction is None or connection.in_nested_transaction():
        return set()
    remembered = connection.info.get(_LOCKS_KEY)
    if remembered is None or remembered[0] is not transaction:
        remembered = (transaction, set())
        connection.info[_LOCKS_KEY] = remembered
    held: set[Key] = remembered[1]
    return held


def counted(statement: sa.Select[Any]) -> sa.Select[Any]:
    """Only the orders budgets count: admitted (not held by a budget) and not given back."""
    return statement.where(
        orders.c.state.not_in(_GIVEN_BACK),
        orders.c.held_by_budget.is_(None),
    )


def _count(
    connection: sa.Connection, budgets: Sequence[Budget], entity: str, day: date
) -> dict[Key, Usage]:
    """One statement counting every (scope, period) of the order's budgets."""
    columns: list[sa.ColumnElement[Any]] = []
    windows: dict[Key, tuple[date, date]] = {}
    for budget in budgets:
        first, end, key = period_bounds(budget.period, day)
        windows[(budget.scope_for(entity), key)] = (first, end)
    keys = sorted(windows)
    for index, (scope, _key) in enumerate(keys):
        first, end = windows[(scope, _key)]
        condition = sa.and_(orders.c.budget_day >= first, orders.c.budget_day < end)
        if scope != ALL_ENTITIES:
            condition = sa.and_(condition, orders.c.billing_entity_slug == scope)
        columns.append(sa.func.sum(sa.case((condition, 1), else_=0)).label(f"o{index}"))
        columns.append(sa.func.sum(sa.case((condition, _SPEND), else_=0)).label(f"s{index}"))
    statement = counted(
        sa.select(*columns).where(
            orders.c.budget_day >= min(first for first, _ in windows.values()),
            orders.c.budget_day < max(end for _, end in windows.values()),
        )
    )
    if all(scope != ALL_ENTITIES for scope, _ in keys):
        statement = statement.where(orders.c.billing_entity_slug == entity)
    row = connection.execute(statement).one()
    return {
        key: Usage(int(row[2 * index] or 0), int(row[2 * index + 1] or 0))
        for index, key in enumerate(keys)
    }


def usage_now(connection: sa.Connection, budgets: Sequence[Budget], day: date) -> dict[Key, Usage]:
    """What every scope of every budget holds in its period containing `day`, without locking.

    For `propready simulate`, which only reads: one row per budget scope and period key.
    """
    usage: dict[Key, Usage] = {}
    for period in sorted({b.period for b in budgets}):
        first, end, key = period_bounds(period, day)
        rows = connection.execute(
            counted(
                sa.select(orders.c.billing_entity_slug, sa.func.count(), sa.func.sum(_SPEND))
                .where(orders.c.budget_day >= first, orders.c.budget_day < end)
                .group_by(orders.c.billing_entity_slug)
            )
        ).all()
        total = Usage()
        for entity, count, spend in rows:
            usage[(str(entity), key)] = Usage(int(count), int(spend or 0))
            total = Usage(total.orders + int(count), total.spend_cents + int(spend or 0))
        usage[(ALL_ENTITIES, key)] = total
    return usage


def record_vendor_price(
    connection: sa.Connection, order_id: int, cents: int, now: datetime
) -> bool:
    """Store the price PlanOmatic reports for an order; it replaces the estimate everywhere.

    True when the stored price changed (the caller audits it), False when it was already known
    or the order does not exist. For the order lifecycle (retrieve, webhooks); see
    core/pricing.vendor_price_from_order for reading it from a vendor body.
    """
    if cents < 0:
        raise ValueError(f"a vendor price cannot be negative: {cents}")
    result = connection.execute(
        orders.update()
        .where(orders.c.id == order_id, orders.c.vendor_price_cents.is_distinct_from(cents))
        .values(vendor_price_cents=cents, updated_at=now)
    )
    return result.rowcount == 1


def approve_held(connection: sa.Connection, order_id: int, day: date, now: datetime) -> bool:
    """A budget-held order becomes an ordinary planned order counted on `day`; False if it was
    not awaiting approval any more."""
    result = connection.execute(
        orders.update()
        .where(orders.c.id == order_id, orders.c.state == OrderState.AWAITING_APPROVAL.value)
        .values(
            state=OrderState.PLANNED.value,
            held_by_budget=None,
            budget_day=day,
            updated_at=now,
            next_attempt_at=now,
        )
    )
    return result.rowcount == 1
