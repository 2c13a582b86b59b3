"""Webhook deliveries in the state database: stored once by `propready serve`, then applied.

Life of a row (`core.webhook_delivery.DeliveryState`):

    serve: insert_delivery ──> pending ──claim_pending + mark_applied──> applied
                       │                └─claim_pending + mark_unmatched─> unmatched
                       └─────> malformed (never applied)
    replay: applied / unmatched ──> pending again (applied_at cleared)

Every function takes an open connection inside the caller's transaction. The receiver commits
`insert_delivery` before it answers 2xx; the applier (phase 2) claims, applies and marks in one
transaction, so a crash leaves a row pending and it is applied again (applying is idempotent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from propready.adapters.store.schema import webhook_delivery
from propready.core.vendor_news import MalformedNews, VendorNews, parse_vendor_news
from propready.core.vendor_status import StatusPoint
from propready.core.webhook_delivery import DeliveryState, IncomingDelivery

_table = webhook_delivery


@dataclass(frozen=True, slots=True)
class Delivery:
    """One stored delivery."""

    id: int
    received_at: datetime
    dedupe_hash: str
    state: DeliveryState
    vendor_order_id: str | None
    vendor_request_id: str | None
    external_order_id: str | None
    external_property_id: str | None
    event: str | None
    event_at: datetime | None
    order_status: str | None
    status_rank: int | None
    body: Any  # the masked JSON (None when the body was not JSON)
    raw_text: str | None  # the masked text of a body that was not JSON
    problem: str | None
    applied_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | sa.RowMapping) -> Delivery:
        return cls(
            id=int(row["id"]),
            received_at=row["received_at"],
            dedupe_hash=str(row["dedupe_hash"]),
            state=DeliveryState(row["state"]),
            vendor_order_id=row["vendor_order_id"],
            vendor_request_id=row["vendor_request_id"],
            external_order_id=row["external_order_id"],
            external_property_id=row["external_property_id"],
            event=row["event"],
            event_at=row["event_at"],
            order_status=row["order_status"],
            status_rank=row["status_rank"],
            body=row["body"],
            raw_text=row["raw_text"],
            problem=row["problem"],
            applied_at=row["applied_at"],
        )

    @property
    def status_point(self) -> StatusPoint:
        """This delivery's status and event time, for `core.vendor_status.is_newer`."""
        return StatusPoint(self.order_status, self.event_at)

    def news(self) -> VendorNews | MalformedNews:
        """The full parsed record (appointments, links, photos) read again from the body."""
        if self.body is None:
            return MalformedNews(self.problem or "the body was not JSON")
        return parse_vendor_news(self.body)


def insert_delivery(
    connection: sa.Connection, incoming: IncomingDelivery, received_at: datetime
) -> int | None:
    """Store a delivery unless one with the same dedupe hash exists; the new id, or None."""
    news = incoming.news
    values: dict[str, Any] = {
        "received_at": received_at,
        "dedupe_hash": incoming.dedupe_hash,
        "state": incoming.state.value,
        "body": incoming.body,
        "raw_text": incoming.raw_text,
        "problem": incoming.problem,
        "vendor_order_id": news.vendor_order_id if news else None,
        "vendor_request_id": news.vendor_request_id if news else None,
        "external_order_id": news.external_order_id if news else None,
        "external_property_id": news.external_property_id if news else None,
        "event": news.event if news else None,
        "event_at": news.event_at if news else None,
        "order_status": news.status if news else None,
        "status_rank": news.status_rank if news else None,
    }
    new_id = connection.execute(_insert_statement(connection.dialect.name), values).scalar()
    return int(new_id) if new_id is not None else None


_INSERTS: dict[str, Any] = {}


def _insert_statement(dialect: str) -> Any:
    """One INSERT ... ON CONFLICT DO NOTHING RETURNING id per dialect, built once: the receiver
    runs it for every delivery, and building it is most of its cost in Python."""
    statement = _INSERTS.get(dialect)
    if statement is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = (
            insert(_table)
            .on_conflict_do_nothing(index_elements=["dedupe_hash"])
            .returning(_table.c.id)
        )
        _INSERTS[dialect] = statement
    return statement


def get_delivery(connection: sa.Connection, delivery_id: int) -> Delivery | None:
    row = connection.execute(sa.select(_table).where(_table.c.id == delivery_id)).mappings().first()
    return Delivery.from_row(row) if row is not None else None


def list_deliveries(
    connection: sa.Connection,
    *,
    states: Sequence[DeliveryState] = (),
    since: datetime | None = None,
    limit: int | None = None,
) -> list[Delivery]:
    """Stored deliveries in receipt order, optionally of some states and received since a time."""
    query = sa.select(_table).order_by(_table.c.id)
    if states:
        query = query.where(_table.c.state.in_([state.value for state in states]))
    if since is not None:
        query = query.where(_table.c.received_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return [Delivery.from_row(row) for row in connection.execute(query).mappings()]


def count_by_state(connection: sa.Connection) -> dict[str, int]:
    rows = connection.execute(
        sa.select(_table.c.state, sa.func.count()).group_by(_table.c.state)
    ).all()
    return {str(state): int(count) for state, count in rows}


def claim_pending(connection: sa.Connection, limit: int) -> list[Delivery]:
    """Lock up to `limit` deliveries waiting to be applied, in the order to apply them.

    Grouped by order (vendor order id, then external order id), oldest news first: by event
    time (none first), then status rank, then receipt. On PostgreSQL the rows are locked
    `FOR UPDATE SKIP LOCKED`, so several appliers on several hosts share the work; SQLite's
    `BEGIN IMMEDIATE` already makes the transaction the only writer. Call it inside the
    transaction that applies the rows and marks them.
    """
    query = (
        sa.select(_table)
        .where(_table.c.state == DeliveryState.PENDING.value, _table.c.applied_at.is_(None))
        .order_by(
            _table.c.vendor_order_id.asc().nulls_last(),
            _table.c.external_order_id.asc().nulls_last(),
            _table.c.event_at.asc().nulls_first(),
            _table.c.status_rank.asc().nulls_first(),
            _table.c.id.asc(),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [Delivery.from_row(row) for row in connection.execute(query).mappings()]


def mark_applied(
    connection: sa.Connection, delivery_id: int, now: datetime, note: str | None = None
) -> None:
    """The delivery's news is in its order (or changed nothing, being older): done."""
    values: dict[str, Any] = {"state": DeliveryState.APPLIED.value, "applied_at": now}
    if note is not None:
        values["problem"] = note
    connection.execute(sa.update(_table).where(_table.c.id == delivery_id).values(**values))


def mark_unmatched(connection: sa.Connection, delivery_id: int, reason: str) -> None:
    """No order of ours matches (yet): keep it flagged, with `reason`, for a person or a replay."""
    connection.execute(
        sa.update(_table)
        .where(_table.c.id == delivery_id)
        .values(state=DeliveryState.UNMATCHED.value, applied_at=None, problem=reason)
    )


def requeue_unmatched(
    connection: sa.Connection,
    *,
    vendor_order_id: str | None = None,
    external_order_id: str | None = None,
) -> int:
    """Unmatched deliveries naming this order become pending again (the order now exists)."""
    names = []
    if vendor_order_id is not None:
        names.append(_table.c.vendor_order_id == vendor_order_id)
    if external_order_id is not None:
        names.append(_table.c.external_order_id == external_order_id)
    if not names:
        return 0
    result = connection.execute(
        sa.update(_table)
        .where(_table.c.state == DeliveryState.UNMATCHED.value, sa.or_(*names))
        .values(state=DeliveryState.PENDING.value, applied_at=None)
    )
    return int(result.rowcount or 0)


def replay(
    connection: sa.Connection,
    *,
    delivery_id: int | None = None,
    since: datetime | None = None,
) -> int:
    """Make deliveries pending again so the applier reapplies them; the number changed.

    One delivery by id, or every delivery received since a time (both: that one, if it was
    received since then). Malformed deliveries are never applied and stay as they are; pending
    ones are already waiting. Harmless by design: applying the same news twice changes nothing.
    """
    if delivery_id is None and since is None:
        raise ValueError("name a delivery id or a time to replay from")
    query = sa.update(_table).where(
        _table.c.state.in_([DeliveryState.APPLIED.value, DeliveryState.UNMATCHED.value])
    )
    if delivery_id is not None:
        query = query.where(_table.c.id == delivery_id)
    if since is not None:
        query = query.where(_table.c.received_at >= since)
    result = connection.execute(query.values(state=DeliveryState.PENDING.value, applied_at=None))
    return int(result.rowcount or 0)
