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
from dataclasses import dataclass, field
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
_MEMORY_KEY = "propready_budget_memory"
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
    cents = plan.estimated_price_cents or 0
    verdict = BudgetVerdict("ok", day)
    if mine:
        memory = _memory(connection)
        usage = lock_and_count(connection, mine, entity, day, now, memory)
        verdict = judge(mine, entity, cents, day, zone, usage)
        if verdict.outcome != "ok" and memory is not None and memory.pending:
            # The usage counted this transaction's earlier plans as inserted; some may not be
            # (the duplicate window refused them). Near the limit, look them up and judge again.
            _settle_pending(connection, memory)
            usage = {key: memory.tallies[key] for key in usage}
            verdict = judge(mine, entity, cents, day, zone, usage)
        if verdict.outcome == "ok" and memory is not None:
            memory.expect(plan.external_order_id, tuple(usage), cents)  # the caller inserts it
    if verdict.outcome == "ok" and plan.unpriced_services and not plan.allow_unpriced:
        return price_hold(day, plan.unpriced_services)  # held, yet counted: not a budget hold
    return verdict


def lock_for_batch(
    connection: sa.Connection,
    plans: Sequence[OrderPlan],
    budgets: Sequence[Budget],
    now: datetime,
    zone: tzinfo,
) -> None:
    """Lock every budget row a batch of plans will need, in one sorted statement, up front.

    Optional: check_and_lock locks what each plan needs anyway. A batch that locks per plan can
    wait on another concurrent batch in a cycle (plan 1 locks entity A, plan 2 wants B, while
    the other batch holds B and wants A; PostgreSQL then aborts one with a deadlock error);
    locking the union first, sorted, cannot.
    """
    day = local_day(now, zone)
    keys = sorted(
        {key for plan in plans for key in lock_keys(budgets, plan.billing_entity_slug, day)}
    )
    if keys:
        _lock(connection, keys, now, _memory(connection))


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
    usage = lock_and_count(connection, mine, entity, day, now, _memory(connection))
    return judge(mine, entity, order.spend_cents, day, zone, usage)


def lock_and_count(
    connection: sa.Connection,
    budgets: Sequence[Budget],
    entity: str,
    day: date,
    now: datetime,
    memory: _Memory | None = None,
) -> dict[Key, Usage]:
    """Lock the budget rows of an order of `entity` on `day`, then count what they hold."""
    keys = lock_keys(budgets, entity, day)
    _lock(connection, keys, now, memory)
    return _count(connection, budgets, entity, day, memory)


@dataclass
class _Memory:
    """What one transaction knows about its budget rows while it holds their locks.

    While a lock is held no other budget-checking writer can add an order under that key, so
    the key's usage changes only by this transaction's own inserts. The first check of a key
    recounts its period (`tallies`, and `floor_id`: the highest order id then). Later checks
    (the next readiness events of a poll batch) add the orders this transaction was about to
    insert (`pending`, summed per key in `pending_usage`) as if all were inserted: an upper
    bound, so an order it admits is admitted by the exact count too, and no statement is
    needed. Only when that bound would refuse an order are the pending orders looked up (one
    indexed read, ids above the floor) and the order judged on the exact count. A share given
    back meanwhile (a cancel committed by another process) is seen by the next transaction;
    until then the count errs on the safe side.
    """

    transaction: sa.RootTransaction | None
    locks: set[Key] = field(default_factory=set)
    tallies: dict[Key, Usage] = field(default_factory=dict)
    floor_id: int = 0
    pending: dict[str, tuple[Key, ...]] = field(default_factory=dict)
    pending_usage: dict[Key, Usage] = field(default_factory=dict)  # the pending orders, summed

    def expect(self, external_order_id: str, keys: tuple[Key, ...], cents: int) -> None:
        """An order the caller is about to insert, counted under `keys` until looked up."""
        if external_order_id in self.pending:
            return  # the same plan twice: its id can be inserted once only
        self.pending[external_order_id] = keys
        for key in keys:
            used = self.pending_usage.get(key, Usage())
            self.pending_usage[key] = Usage(used.orders + 1, used.spend_cents + cents)

    def usage(self, key: Key) -> Usage:
        """The key's usage with every pending order counted as inserted (an upper bound)."""
        base, extra = self.tallies[key], self.pending_usage.get(key, Usage())
        return Usage(base.orders + extra.orders, base.spend_cents + extra.spend_cents)


def _memory(connection: sa.Connection) -> _Memory | None:
    """This transaction's memory; None inside a savepoint, whose rollback would free locks."""
    transaction = connection.get_transaction()
    if transaction is None or connection.in_nested_transaction():
        return None
    memory = connection.info.get(_MEMORY_KEY)
    if not isinstance(memory, _Memory) or memory.transaction is not transaction:
        memory = _Memory(transaction)
        connection.info[_MEMORY_KEY] = memory
    return memory


def _lock(
    connection: sa.Connection, keys: Sequence[Key], now: datetime, memory: _Memory | None
) -> None:
    missing = [key for key in keys if memory is None or key not in memory.locks]
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
    if memory is not None:
        memory.locks.update(missing)


def counted(statement: sa.Select[Any]) -> sa.Select[Any]:
    """Only the orders budgets count: admitted (not held by a budget) and not given back."""
    return statement.where(
        orders.c.state.not_in(_GIVEN_BACK),
        orders.c.held_by_budget.is_(None),
    )


def _count(
    connection: sa.Connection,
    budgets: Sequence[Budget],
    entity: str,
    day: date,
    memory: _Memory | None,
) -> dict[Key, Usage]:
    """The usage of every (scope, period) of the order's budgets."""
    periods: dict[Key, tuple[date, date]] = {}
    for budget in budgets:
        first, end, period_key = period_bounds(budget.period, day)
        periods[(budget.scope_for(entity), period_key)] = (first, end)
    if memory is None:
        memory = _Memory(None)  # a savepoint: recount every time
    fresh = sorted(key for key in periods if key not in memory.tallies)
    if fresh:
        if memory.pending:  # before the recount moves the floor above them
            _settle_pending(connection, memory)
        statement = counted(sa.select(*_sums(fresh, periods), _MAX_ID)).where(
            orders.c.budget_day >= min(first for first, _ in periods.values()),
            orders.c.budget_day < max(end for _, end in periods.values()),
        )
        if all(scope != ALL_ENTITIES for scope, _ in fresh):
            statement = statement.where(orders.c.billing_entity_slug == entity)
        row = connection.execute(statement).one()
        for index, key in enumerate(fresh):
            memory.tallies[key] = Usage(int(row[2 * index] or 0), int(row[2 * index + 1] or 0))
        memory.floor_id = max(memory.floor_id, int(row[-1] or 0))
    return {key: memory.usage(key) for key in periods}


def _settle_pending(connection: sa.Connection, memory: _Memory) -> None:
    """Count the orders this transaction inserted since its last check (one indexed lookup)."""
    wanted = dict(memory.pending)
    memory.pending.clear()
    memory.pending_usage.clear()
    found = connection.execute(
        counted(
            sa.select(orders.c.external_order_id, _SPEND).where(
                orders.c.external_order_id.in_(list(wanted)), orders.c.id > memory.floor_id
            )
        )
    ).all()
    for external_order_id, spend in found:
        for key in wanted[str(external_order_id)]:
            used = memory.tallies[key]
            memory.tallies[key] = Usage(used.orders + 1, used.spend_cents + int(spend or 0))


# The highest order id at the statement's snapshot (a primary-key lookup).
_MAX_ID = sa.select(sa.func.max(orders.c.id)).scalar_subquery()


def _sums(keys: Sequence[Key], periods: dict[Key, tuple[date, date]]) -> list[Any]:
    """Two columns per key: its orders and its spend, in the key's scope and period."""
    columns: list[Any] = []
    for scope, period_key in keys:
        first, end = periods[(scope, period_key)]
        condition = sa.and_(orders.c.budget_day >= first, orders.c.budget_day < end)
        if scope != ALL_ENTITIES:
            condition = sa.and_(condition, orders.c.billing_entity_slug == scope)
        columns.append(sa.func.sum(sa.case((condition, 1), else_=0)))
        columns.append(sa.func.sum(sa.case((condition, _SPEND), else_=0)))
    return columns


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
