"""The order outbox: rows written with their decision, then sent in leased, committed phases.

Every function here takes an open connection inside the caller's transaction; the service layer
decides where transactions begin and end (the atomic phases of reliability.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import UtcDateTime, orders
from propready.core.orders import (
    FREES_WINDOW,
    HOLDS_WINDOW,
    VENDOR_FINAL_STATUSES,
    Order,
    OrderState,
)
from propready.core.planning import OrderPlan, window_end

_HOLDING = [s.value for s in HOLDS_WINDOW]


@dataclass(frozen=True, slots=True)
class OrderInserted:
    order_id: int


@dataclass(frozen=True, slots=True)
class WindowTaken:
    """The plan was not inserted: `blocker` is the order holding the property's window."""

    blocker: Order
    by_constraint: bool  # True when the database constraint, not the check, refused it


def blocking_order(connection: sa.Connection, property_id: str, now: datetime) -> Order | None:
    """An earlier order for this property whose duplicate window is still open, if any."""
    row = (
        connection.execute(
            sa.select(orders)
            .where(
                orders.c.external_property_id == property_id,
                orders.c.window_end > now,
                orders.c.created_at < orders.c.window_end,
                orders.c.state.in_(_HOLDING),
            )
            .order_by(orders.c.created_at.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return Order.from_row(row) if row is not None else None


def blocking_orders(
    connection: sa.Connection, property_ids: Sequence[str], now: datetime
) -> dict[str, Order]:
    """For each of these properties, the latest order whose duplicate window is still open."""
    if not property_ids:
        return {}
    rows = connection.execute(
        sa.select(orders)
        .where(
            orders.c.external_property_id.in_(sorted(set(property_ids))),
            orders.c.window_end > now,
            orders.c.created_at < orders.c.window_end,
            orders.c.state.in_(_HOLDING),
        )
        .order_by(orders.c.created_at)
    ).mappings()
    return {str(row["external_property_id"]): Order.from_row(row) for row in rows}


def insert_order_in_window(
    connection: sa.Connection,
    plan: OrderPlan,
    *,
    event_id: int | None,
    rule_id: str,
    rules_version: str,
    state: OrderState,
    now: datetime,
    budget_day: date | None = None,
    held_by_budget: str | None = None,
    window_override: bool = False,
) -> OrderInserted | WindowTaken:
    """Claim the property's duplicate window and write the order, or name who holds the window.

    The check finds the usual case cheaply. Racers that pass it together (PostgreSQL under READ
    COMMITTED) are stopped by the exclusion constraint, SQLite's by its trigger; the loser's
    insert is undone in a savepoint so the caller's transaction (the whole poll batch) goes on.

    `window_override` (an operator's `reorder --ignore-window`, audited by the caller): the plan
    holds no window of its own (window_hours 0, an empty range, which the constraint never
    counts as overlapping) and the open window of another order does not stop it.
    """
    if window_override and plan.window_hours != 0:
        raise ValueError("a window override needs a plan that holds no window (window_hours 0)")
    blocker = (
        None if window_override else blocking_order(connection, plan.external_property_id, now)
    )
    if blocker is not None:
        return WindowTaken(blocker, by_constraint=False)
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            with connection.begin_nested():
                order_id = insert_order(
                    connection,
                    plan,
                    event_id=event_id,
                    rule_id=rule_id,
                    rules_version=rules_version,
                    state=state,
                    now=now,
                    budget_day=budget_day,
                    held_by_budget=held_by_budget,
                )
        except sa.exc.IntegrityError:
            # The winner has committed by now (PostgreSQL waits for it before raising), so a
            # fresh statement sees it. The same decision inserted twice collides on
            # external_order_id.
            found = blocking_order(connection, plan.external_property_id, now)
            if found is None:
                found = find_by_external_order_id(connection, plan.external_order_id)
            if found is None:
                raise  # some other integrity problem: not ours to hide
            return WindowTaken(found, by_constraint=True)
        except sa.exc.OperationalError as exc:
            # Two racers' exclusion-constraint checks can wait on each other's uncommitted rows;
            # PostgreSQL then aborts one of them (deadlock_detected). The savepoint is rolled
            # back; inserting again waits for the other racer and then sees its outcome.
            if not is_deadlock(exc) or attempt == DEADLOCK_ATTEMPTS:
                raise
            continue
        return OrderInserted(order_id)
    raise AssertionError("unreachable: the last attempt returns or raises")


DEADLOCK_ATTEMPTS = 5


def is_deadlock(exc: sa.exc.DBAPIError) -> bool:
    """PostgreSQL aborted the statement to break a lock cycle (SQLSTATE 40P01)."""
    return getattr(exc.orig, "sqlstate", None) == "40P01"


def insert_order(
    connection: sa.Connection,
    plan: OrderPlan,
    *,
    event_id: int | None,
    rule_id: str,
    rules_version: str,
    state: OrderState,
    now: datetime,
    budget_day: date | None = None,
    held_by_budget: str | None = None,
) -> int:
    """Write one order row without any check (the database constraint still applies).

    `budget_day` is the local date (source time zone) the order counts in for budgets and spend
    per month (adapters/store/budgets.py); without one, the UTC date of `now`.
    """
    result = connection.execute(
        orders.insert()
        .values(
            external_order_id=plan.external_order_id,
            external_property_id=plan.external_property_id,
            event_id=event_id,
            rule_id=rule_id,
            rules_version=rules_version,
            billing_entity_slug=plan.billing_entity_slug,
            state=state.value,
            payload=dict(plan.payload),
            created_at=now,
            window_end=window_end(now, plan.window_hours),
            updated_at=now,
            attempts=0,
            next_attempt_at=now,
            estimated_price_cents=plan.estimated_price_cents,
            price_estimated=plan.price_estimated,
            budget_day=budget_day if budget_day is not None else now.astimezone(UTC).date(),
            held_by_budget=held_by_budget,
        )
        .returning(orders.c.id)
    )
    return int(result.scalar_one())


def claim_due(
    connection: sa.Connection, owner: str, now: datetime, lease_seconds: float
) -> Order | None:
    """Lease the oldest due planned order to `owner`; None when nothing is due.

    `FOR UPDATE SKIP LOCKED` lets senders on several hosts claim side by side on PostgreSQL: a
    row another sender is claiming is skipped, not waited for. SQLite has no row locks (the
    clause is not rendered there); its BEGIN IMMEDIATE already makes claims one at a time.
    """
    order_id = connection.execute(
        sa.select(orders.c.id)
        .where(orders.c.state == OrderState.PLANNED.value, orders.c.next_attempt_at <= now)
        .order_by(orders.c.next_attempt_at, orders.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).scalar()
    if order_id is None:
        return None
    connection.execute(
        orders.update()
        .where(orders.c.id == order_id)
        .values(
            state=OrderState.SENDING.value,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=orders.c.attempts + 1,
            updated_at=now,
        )
    )
    return get_order(connection, int(order_id))


def _update_while_held(connection: sa.Connection, order_id: int, owner: str, **values: Any) -> bool:
    """Update a `sending` order only while `owner` holds its lease; False if it no longer does."""
    result = connection.execute(
        orders.update()
        .where(
            orders.c.id == order_id,
            orders.c.state == OrderState.SENDING.value,
            orders.c.lease_owner == owner,
        )
        .values(**values)
    )
    return result.rowcount == 1


def renew_lease(
    connection: sa.Connection, order_id: int, owner: str, now: datetime, lease_seconds: float
) -> bool:
    """Extend `owner`'s lease on a `sending` order; False if it is no longer theirs."""
    until = now + timedelta(seconds=lease_seconds)
    return _update_while_held(connection, order_id, owner, lease_until=until, updated_at=now)


def take_over(
    connection: sa.Connection,
    order_id: int,
    previous_owner: str,
    owner: str,
    now: datetime,
    lease_seconds: float,
) -> bool:
    """Move an abandoned `sending` order's lease from `previous_owner` to `owner`.

    False when someone else (another host's recovery, or the sender after all) got there first.
    """
    until = now + timedelta(seconds=lease_seconds)
    return _update_while_held(
        connection, order_id, previous_owner, lease_owner=owner, lease_until=until, updated_at=now
    )


def park(connection: sa.Connection, order_id: int, owner: str, now: datetime) -> bool:
    """Give a leased order back unsent (`sending` -> `planned`, due now, attempt not counted).

    Only for an order whose request has provably not left the process.
    """
    return _update_while_held(
        connection,
        order_id,
        owner,
        state=OrderState.PLANNED.value,
        lease_owner=None,
        lease_until=None,
        attempts=orders.c.attempts - 1,
        next_attempt_at=now,
        updated_at=now,
    )


def get_order(connection: sa.Connection, order_id: int) -> Order | None:
    row = connection.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().first()
    return Order.from_row(row) if row is not None else None


# States from which the stored request may still be sent (its access fields are kept).
_STILL_SENDABLE = frozenset({OrderState.PLANNED, OrderState.SENDING, OrderState.AWAITING_APPROVAL})
_ACCESS_SECRETS = ("access_code", "lockbox_location")


def _payload_without_access_secrets(connection: sa.Connection) -> sa.ColumnElement[Any]:
    if connection.dialect.name == "postgresql":
        paths = " ".join(f"#- '{{property_access,{key}}}'" for key in _ACCESS_SECRETS)
        return sa.literal_column(f"(payload {paths})")
    paths = ", ".join(f"'$.property_access.{key}'" for key in _ACCESS_SECRETS)
    return sa.literal_column(f"json_remove(payload, {paths})")


def set_outcome(
    connection: sa.Connection,
    order_id: int,
    state: OrderState,
    now: datetime,
    *,
    expected_state: OrderState | None = None,
    expected_owner: str | None = None,
    vendor_order_id: str | None = None,
    vendor_request_id: str | None = None,
    vendor_status: str | None = None,
    last_error: str | None = None,
    next_attempt_at: datetime | None = None,
    ambiguous_at: datetime | None = None,
) -> bool:
    """Record where an order stands now; False when `expected_state` no longer holds."""
    values: dict[str, Any] = {
        "state": state.value,
        "updated_at": now,
        "lease_owner": None,
        "lease_until": None,
        "last_error": last_error,
        "next_attempt_at": next_attempt_at,
    }
    if vendor_order_id is not None:
        values["vendor_order_id"] = vendor_order_id
    if vendor_request_id is not None:
        values["vendor_request_id"] = vendor_request_id
    if vendor_status is not None:
        values["vendor_status"] = vendor_status
        values["status_checked_at"] = now
    if ambiguous_at is not None:
        values["ambiguous_at"] = sa.func.coalesce(orders.c.ambiguous_at, ambiguous_at)
    if state in FREES_WINDOW:
        # No vendor order exists (or it was canceled): the window ends now, never before it began.
        values["window_end"] = sa.case(
            (orders.c.created_at > sa.literal(now, UtcDateTime), orders.c.created_at),
            else_=sa.literal(now, UtcDateTime),
        )
    if state not in _STILL_SENDABLE:
        # Nothing will send this request again: the access code and lockbox location it holds
        # for a (re)send are dropped from the state database.
        values["payload"] = _payload_without_access_secrets(connection)
    statement = orders.update().where(orders.c.id == order_id).values(**values)
    if expected_state is not None:
        statement = statement.where(orders.c.state == expected_state.value)
    if expected_owner is not None:
        statement = statement.where(orders.c.lease_owner == expected_owner)
    return connection.execute(statement).rowcount == 1


def expired_leases(
    connection: sa.Connection, now: datetime, dead_owners: Sequence[str] = ()
) -> list[Order]:
    """Orders left in `sending` by a sender that died: their POST may or may not have happened.

    A lease counts as abandoned when it has expired or when its owner is known to be dead.
    """
    abandoned = orders.c.lease_until < now
    if dead_owners:
        abandoned = sa.or_(abandoned, orders.c.lease_owner.in_(list(dead_owners)))
    rows = connection.execute(
        sa.select(orders)
        .where(orders.c.state == OrderState.SENDING.value, abandoned)
        .order_by(orders.c.id)
    ).mappings()
    return [Order.from_row(r) for r in rows]


def sending_lease_owners(connection: sa.Connection) -> list[str]:
    rows = connection.execute(
        sa.select(orders.c.lease_owner)
        .where(orders.c.state == OrderState.SENDING.value, orders.c.lease_owner.is_not(None))
        .distinct()
    ).scalars()
    return [str(owner) for owner in rows]


def approve(connection: sa.Connection, order_id: int, now: datetime) -> bool:
    """awaiting_approval -> planned, due now; False if the order was not awaiting approval."""
    result = connection.execute(
        orders.update()
        .where(orders.c.id == order_id, orders.c.state == OrderState.AWAITING_APPROVAL.value)
        .values(state=OrderState.PLANNED.value, updated_at=now, next_attempt_at=now)
    )
    return result.rowcount == 1


def hold(connection: sa.Connection, order_id: int, now: datetime) -> bool:
    """planned -> awaiting_approval; False if the order was not planned (a sender took it)."""
    result = connection.execute(
        orders.update()
        .where(orders.c.id == order_id, orders.c.state == OrderState.PLANNED.value)
        .values(state=OrderState.AWAITING_APPROVAL.value, updated_at=now)
    )
    return result.rowcount == 1


def orders_to_sync(
    connection: sa.Connection, checked_before: datetime | None, limit: int
) -> list[int]:
    """Placed orders the vendor still moves along, least recently checked first.

    With `checked_before`, only those not checked since then.
    """
    statement = (
        sa.select(orders.c.id)
        .where(
            orders.c.state == OrderState.PLACED.value,
            orders.c.vendor_order_id.is_not(None),
            sa.or_(
                orders.c.vendor_status.is_(None),
                orders.c.vendor_status.not_in(list(VENDOR_FINAL_STATUSES)),
            ),
        )
        .order_by(orders.c.status_checked_at.is_not(None), orders.c.status_checked_at, orders.c.id)
        .limit(limit)
    )
    if checked_before is not None:
        statement = statement.where(
            sa.or_(
                orders.c.status_checked_at.is_(None),
                orders.c.status_checked_at < checked_before,
            )
        )
    return [int(i) for i in connection.execute(statement).scalars()]


def claim_status_check(
    connection: sa.Connection, order_id: int, checked_before: datetime | None, now: datetime
) -> bool:
    """Mark a placed order as being checked now, unless another host checked it meanwhile.

    Hosts sharing a state database then retrieve each order once per interval between them,
    not once each: the vendor's rate limit is shared too.
    """
    statement = orders.update().where(orders.c.id == order_id).values(status_checked_at=now)
    if checked_before is not None:
        statement = statement.where(
            sa.or_(
                orders.c.status_checked_at.is_(None),
                orders.c.status_checked_at < checked_before,
            )
        )
    return connection.execute(statement).rowcount == 1


def record_vendor_status(
    connection: sa.Connection, order_id: int, vendor_status: str | None, now: datetime
) -> None:
    values: dict[str, Any] = {"status_checked_at": now}
    if vendor_status is not None:
        values["vendor_status"] = vendor_status
    connection.execute(orders.update().where(orders.c.id == order_id).values(**values))


def list_orders(
    connection: sa.Connection, *, state: str | None = None, limit: int = 500
) -> list[Order]:
    statement = sa.select(orders).order_by(orders.c.id).limit(limit)
    if state is not None:
        statement = statement.where(orders.c.state == state)
    return [Order.from_row(r) for r in connection.execute(statement).mappings()]


def find_by_external_order_id(connection: sa.Connection, external_order_id: str) -> Order | None:
    row = (
        connection.execute(sa.select(orders).where(orders.c.external_order_id == external_order_id))
        .mappings()
        .first()
    )
    return Order.from_row(row) if row is not None else None


def count_by_state(connection: sa.Connection) -> dict[str, int]:
    """How many orders are in each state (for the metrics)."""
    rows = connection.execute(
        sa.select(orders.c.state, sa.func.count()).group_by(orders.c.state)
    ).all()
    return {str(state): int(count) for state, count in rows}
