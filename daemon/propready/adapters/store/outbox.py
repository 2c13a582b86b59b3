"""The order outbox: rows written with their decision, then sent in leased, committed phases."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import orders
from propready.core.orders import HOLDS_WINDOW, OrderState
from propready.core.planning import OrderPlan, window_end


def blocking_order(
    connection: sa.Connection, property_id: str, now: datetime
) -> Mapping[str, Any] | None:
    """An earlier order for this property whose duplicate window is still open, if any."""
    row = (
        connection.execute(
            sa.select(orders.c.id, orders.c.external_order_id, orders.c.created_at, orders.c.state)
            .where(
                orders.c.external_property_id == property_id,
                orders.c.window_end > now,
                orders.c.state.in_([s.value for s in HOLDS_WINDOW]),
            )
            .order_by(orders.c.created_at.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def insert_order(
    connection: sa.Connection,
    plan: OrderPlan,
    *,
    event_id: int | None,
    rule_id: str,
    rules_version: str,
    state: OrderState,
    now: datetime,
) -> int:
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
        )
        .returning(orders.c.id)
    )
    return int(result.scalar_one())


def due_order_ids(connection: sa.Connection, now: datetime, limit: int) -> list[int]:
    """Planned orders whose next attempt is due, oldest first."""
    return list(
        connection.execute(
            sa.select(orders.c.id)
            .where(orders.c.state == OrderState.PLANNED.value, orders.c.next_attempt_at <= now)
            .order_by(orders.c.id)
            .limit(limit)
        ).scalars()
    )


def lease_for_sending(
    connection: sa.Connection, order_id: int, owner: str, now: datetime, lease_seconds: float
) -> Mapping[str, Any] | None:
    """Move one planned order to `sending` under a lease; None if someone else took it first."""
    result = connection.execute(
        orders.update()
        .where(orders.c.id == order_id, orders.c.state == OrderState.PLANNED.value)
        .values(
            state=OrderState.SENDING.value,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=orders.c.attempts + 1,
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        return None
    return get_order(connection, order_id)


def get_order(connection: sa.Connection, order_id: int) -> Mapping[str, Any] | None:
    row = connection.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().first()
    return dict(row) if row is not None else None


def set_outcome(
    connection: sa.Connection,
    order_id: int,
    state: OrderState,
    now: datetime,
    *,
    vendor_order_id: str | None = None,
    vendor_request_id: str | None = None,
    vendor_status: str | None = None,
    last_error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> None:
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
    if state not in HOLDS_WINDOW:
        values["window_end"] = now  # no vendor order exists: free the window
    connection.execute(orders.update().where(orders.c.id == order_id).values(**values))


def expired_leases(connection: sa.Connection, now: datetime) -> list[Mapping[str, Any]]:
    """Orders left in `sending` by a sender that died: their POST may or may not have happened."""
    rows = connection.execute(
        sa.select(orders).where(
            orders.c.state == OrderState.SENDING.value, orders.c.lease_until < now
        )
    ).mappings()
    return [dict(r) for r in rows]


def list_orders(
    connection: sa.Connection, *, state: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    statement = sa.select(orders).order_by(orders.c.id).limit(limit)
    if state is not None:
        statement = statement.where(orders.c.state == state)
    return [dict(r) for r in connection.execute(statement).mappings()]


def find_by_external_order_id(
    connection: sa.Connection, external_order_id: str
) -> dict[str, Any] | None:
    row = (
        connection.execute(sa.select(orders).where(orders.c.external_order_id == external_order_id))
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None
