"""Reads for the web console's pages: bounded, newest first, keyset-paginated by id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import order_deliverable, orders
from propready.core.orders import Order


@dataclass(frozen=True, slots=True)
class OrderFilter:
    state: str | None = None
    billing_entity_slug: str | None = None
    rule_id: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


def orders_page(
    connection: sa.Connection, where: OrderFilter, *, before_id: int | None, limit: int
) -> tuple[list[Order], int | None]:
    """Up to `limit` orders matching `where`, newest first, below `before_id`; and the id to
    continue below (None on the last page)."""
    statement = sa.select(orders).order_by(orders.c.id.desc()).limit(limit + 1)
    if where.state:
        statement = statement.where(orders.c.state == where.state)
    if where.billing_entity_slug:
        statement = statement.where(orders.c.billing_entity_slug == where.billing_entity_slug)
    if where.rule_id:
        statement = statement.where(orders.c.rule_id == where.rule_id)
    if where.since is not None:
        statement = statement.where(orders.c.created_at >= where.since)
    if where.until is not None:
        statement = statement.where(orders.c.created_at < where.until)
    if before_id is not None:
        statement = statement.where(orders.c.id < before_id)
    found = [Order.from_row(row) for row in connection.execute(statement).mappings()]
    more = len(found) > limit
    found = found[:limit]
    return found, (found[-1].id if more and found else None)


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    billing_entity_slug: str | None = None
    since: datetime | None = None  # delivered at or after
    until: datetime | None = None  # delivered before


@dataclass(frozen=True, slots=True)
class DeliveryCursor:
    """Where the next deliveries page starts: below this (delivered_at, id)."""

    delivered_at: datetime
    order_id: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivered order on the deliveries page: the order, its photo count and its links."""

    order: Order
    photos: int
    links: tuple[tuple[str, str], ...]  # (name, url), by name


def deliveries_page(
    connection: sa.Connection,
    where: DeliveryFilter,
    *,
    before: DeliveryCursor | None,
    limit: int,
) -> tuple[list[Delivery], DeliveryCursor | None]:
    """Up to `limit` delivered orders matching `where`, newest delivery first (then highest id),
    below `before`; and the cursor to continue from (None on the last page). Served by the
    indexes (delivered_at, id) and (billing_entity_slug, delivered_at, id)."""
    delivered_at = orders.c.delivered_at
    statement = (
        sa.select(orders)
        .where(delivered_at.is_not(None))
        .order_by(delivered_at.desc(), orders.c.id.desc())
        .limit(limit + 1)
    )
    if where.billing_entity_slug:
        statement = statement.where(orders.c.billing_entity_slug == where.billing_entity_slug)
    if where.since is not None:
        statement = statement.where(delivered_at >= where.since)
    if where.until is not None:
        statement = statement.where(delivered_at < where.until)
    if before is not None:
        statement = statement.where(
            sa.or_(
                delivered_at < before.delivered_at,
                sa.and_(delivered_at == before.delivered_at, orders.c.id < before.order_id),
            )
        )
    found = [Order.from_row(row) for row in connection.execute(statement).mappings()]
    more = len(found) > limit
    found = found[:limit]
    ids = [order.id for order in found]
    photos: dict[int, int] = {}
    links: dict[int, list[tuple[str, str]]] = {}
    if ids:
        table = order_deliverable
        counted = connection.execute(
            sa.select(table.c.order_id, sa.func.count())
            .where(table.c.order_id.in_(ids), table.c.kind == "photo")
            .group_by(table.c.order_id)
        ).all()
        photos = {int(order_id): int(count) for order_id, count in counted}
        for order_id, name, url in connection.execute(
            sa.select(table.c.order_id, table.c.name, table.c.url)
            .where(table.c.order_id.in_(ids), table.c.kind == "link")
            .order_by(table.c.order_id, table.c.name)
        ).all():
            links.setdefault(int(order_id), []).append((str(name), str(url)))
    page = [Delivery(o, photos.get(o.id, 0), tuple(links.get(o.id, ()))) for o in found]
    last = found[-1] if more and found else None
    cursor = None
    if last is not None and last.delivered_at is not None:
        cursor = DeliveryCursor(last.delivered_at, last.id)
    return page, cursor


def orders_of_home(connection: sa.Connection, external_property_id: str, limit: int) -> list[Order]:
    statement = (
        sa.select(orders)
        .where(orders.c.external_property_id == external_property_id)
        .order_by(orders.c.id.desc())
        .limit(limit)
    )
    return [Order.from_row(row) for row in connection.execute(statement).mappings()]


def spend_by_entity_month(connection: sa.Connection, since: date) -> list[dict[str, Any]]:
    """audit_spend_by_entity_month's figures for the months from `since` on (the day an order
    counts in, as the view's month), summed in the database from audit_order_spend, with
    whether any figure is an estimate."""
    statement = sa.text(
        "SELECT billing_entity_slug, month, count(*) AS orders, sum(spend_cents) AS spend_cents,"
        " max(CASE WHEN price_source IN ('estimate', 'unknown') THEN 1 ELSE 0 END) AS estimated"
        " FROM audit_order_spend WHERE day >= :since"
        " GROUP BY billing_entity_slug, month ORDER BY month, billing_entity_slug"
    ).bindparams(sa.bindparam("since", type_=sa.Date()))
    return [
        {
            "billing_entity_slug": str(row["billing_entity_slug"]),
            "month": str(row["month"]),
            "orders": int(row["orders"]),
            "spend_cents": int(row["spend_cents"] or 0),
            "estimated": bool(row["estimated"]),
        }
        for row in connection.execute(statement, {"since": since}).mappings()
    ]
