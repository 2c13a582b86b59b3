"""Orders as the vendor's news sees them: matching a delivery to its order, recording the news,
and choosing the orders reconciliation retrieves (migration 0013's columns).

Every function takes an open connection inside the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import UtcDateTime, orders, webhook_delivery
from propready.core.orders import VENDOR_FINAL_STATUSES, Order, OrderState

# Orders news can be applied to: placed ones, unknown ones (the news proves they were placed)
# and locally canceled ones (the vendor's view is still recorded). Orders still being sent, held
# for approval, rejected or failed wait: a delivery naming one is kept unmatched until it is
# placed or unknown (`requeue_matching`).
APPLIABLE_STATES = frozenset({OrderState.PLACED, OrderState.UNKNOWN, OrderState.CANCELED})


def find_order_for_news(
    connection: sa.Connection,
    *,
    vendor_order_id: str | None,
    vendor_request_id: str | None,
    external_order_id: str | None,
) -> Order | None:
    """The order a piece of news names, locked for the caller's transaction (PostgreSQL).

    By the vendor's order id, else its request id, else our external_order_id: orders settled
    by the vendor's `duplicate` answer have no vendor id yet. An order found by its
    external_order_id that already carries another vendor order id is not this news's order.
    """
    conditions: list[sa.ColumnElement[bool]] = []
    if vendor_order_id is not None:
        conditions.append(orders.c.vendor_order_id == vendor_order_id)
    if vendor_request_id is not None:
        conditions.append(orders.c.vendor_request_id == vendor_request_id)
    if external_order_id is not None:
        by_external = orders.c.external_order_id == external_order_id
        if vendor_order_id is not None:
            by_external = sa.and_(
                by_external,
                sa.or_(
                    orders.c.vendor_order_id.is_(None),
                    orders.c.vendor_order_id == vendor_order_id,
                ),
            )
        conditions.append(by_external)
    for condition in conditions:
        row = (
            connection.execute(
                sa.select(orders)
                .where(condition)
                .order_by(orders.c.id.desc())
                .limit(1)
                .with_for_update()
            )
            .mappings()
            .first()
        )
        if row is not None:
            return Order.from_row(row)
    return None


def lock_order(connection: sa.Connection, order_id: int) -> Order | None:
    row = (
        connection.execute(sa.select(orders).where(orders.c.id == order_id).with_for_update())
        .mappings()
        .first()
    )
    return Order.from_row(row) if row is not None else None


def list_delivered(connection: sa.Connection, *, limit: int = 500) -> list[Order]:
    """Orders PlanOmatic delivered, oldest delivery first."""
    rows = connection.execute(
        sa.select(orders)
        .where(orders.c.delivered_at.is_not(None))
        .order_by(orders.c.delivered_at, orders.c.id)
        .limit(limit)
    ).mappings()
    return [Order.from_row(row) for row in rows]


def record_news(connection: sa.Connection, order_id: int, values: dict[str, Any]) -> None:
    connection.execute(orders.update().where(orders.c.id == order_id).values(**values))


def requeue_matching(connection: sa.Connection) -> int:
    """Unmatched deliveries that now name an order news can be applied to become pending."""
    d = webhook_delivery
    appliable = orders.c.state.in_([state.value for state in APPLIABLE_STATES])
    names_order = sa.or_(
        sa.and_(d.c.vendor_order_id.is_not(None), orders.c.vendor_order_id == d.c.vendor_order_id),
        sa.and_(
            d.c.vendor_request_id.is_not(None),
            orders.c.vendor_request_id == d.c.vendor_request_id,
        ),
        sa.and_(
            d.c.external_order_id.is_not(None),
            orders.c.external_order_id == d.c.external_order_id,
            sa.or_(
                orders.c.vendor_order_id.is_(None),
                d.c.vendor_order_id.is_(None),
                orders.c.vendor_order_id == d.c.vendor_order_id,
            ),
        ),
    )
    result = connection.execute(
        sa.update(d)
        .where(
            d.c.state == "unmatched",
            sa.exists(sa.select(orders.c.id).where(appliable, names_order)),
        )
        .values(state="pending", applied_at=None)
    )
    return int(result.rowcount or 0)


def has_pending(connection: sa.Connection) -> bool:
    """Whether any delivery waits to be applied (one indexed SELECT: the apply job's idle cost)."""
    return (
        connection.execute(
            sa.select(webhook_delivery.c.id)
            .where(webhook_delivery.c.state == "pending", webhook_delivery.c.applied_at.is_(None))
            .limit(1)
        ).first()
        is not None
    )


def mark_malformed(connection: sa.Connection, delivery_id: int, reason: str) -> None:
    connection.execute(
        sa.update(webhook_delivery)
        .where(webhook_delivery.c.id == delivery_id)
        .values(state="malformed", applied_at=None, problem=reason[:2000])
    )


def _due_for_reconcile(news_before: datetime, checked_before: datetime) -> sa.ColumnElement[bool]:
    last_news = sa.func.coalesce(orders.c.vendor_news_at, orders.c.created_at, type_=UtcDateTime)
    return sa.and_(
        last_news < sa.literal(news_before, UtcDateTime),
        sa.or_(
            orders.c.status_checked_at.is_(None),
            orders.c.status_checked_at < sa.literal(checked_before, UtcDateTime),
        ),
    )


def orders_to_reconcile(
    connection: sa.Connection, news_before: datetime, checked_before: datetime, limit: int
) -> list[int]:
    """Placed orders the vendor still moves along with no news since `news_before` (an order
    with no news at all counts from its creation) and not retrieved since `checked_before`,
    the longest without news first."""
    last_news = sa.func.coalesce(orders.c.vendor_news_at, orders.c.created_at, type_=UtcDateTime)
    statement = (
        sa.select(orders.c.id)
        .where(
            orders.c.state == OrderState.PLACED.value,
            orders.c.vendor_order_id.is_not(None),
            sa.or_(
                orders.c.vendor_status.is_(None),
                orders.c.vendor_status.not_in(list(VENDOR_FINAL_STATUSES)),
            ),
            orders.c.delivered_at.is_(None),
            _due_for_reconcile(news_before, checked_before),
        )
        .order_by(last_news, orders.c.id)
        .limit(limit)
    )
    return [int(i) for i in connection.execute(statement).scalars()]


def claim_reconcile(
    connection: sa.Connection,
    order_id: int,
    news_before: datetime,
    checked_before: datetime,
    now: datetime,
) -> bool:
    """Take one order's retrieve unless another host took it meanwhile; its news time moves on
    only when the retrieve answers (a failed retrieve is tried again after `checked_before`)."""
    result = connection.execute(
        orders.update()
        .where(orders.c.id == order_id, _due_for_reconcile(news_before, checked_before))
        .values(status_checked_at=now)
    )
    return result.rowcount == 1
