"""What waits for a person, read from current state: the queries behind `propready attention`.

Read-only over the other parts' tables (orders, the audit log, the quarantine, the source
checkpoint); the one table written here is `attention_silence` (acknowledgements, snoozes).
Each kind of item is one function, so a part that learns more (a readiness status column, the
API-key pause table, the order's last vendor news) changes one query, not its callers:

- `not_plannable_homes`: latest order_not_plannable per home with no order since;
- `api_key_refusal`: the latest sending pause/resume in the audit log, if the key was refused;
- `stuck_orders`: placed orders whose last vendor progress is older than a cutoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import (
    UtcDateTime,
    attention_silence,
    audit_log,
    orders,
    source_quarantine,
)
from propready.core.attention import Silence
from propready.core.audit_kinds import AuditKind
from propready.core.orders import OPEN_AT_VENDOR_SQL, OrderState

# Audit kinds that show an order moving at the vendor (lifecycle adds more with webhooks).
PROGRESS_KINDS = (
    AuditKind.ORDER_PLACED,
    AuditKind.ORDER_STATUS_CHANGED,
    AuditKind.ORDER_DELIVERED,
)
VENDOR_CANCEL_KINDS = (AuditKind.ORDER_CANCELED_BY_VENDOR, AuditKind.ORDER_UNABLE_TO_COMPLETE)
WRITEBACK_KINDS = (AuditKind.WRITEBACK_DONE, AuditKind.WRITEBACK_FAILED)
SENDING_KINDS = (AuditKind.SENDING_PAUSED, AuditKind.SENDING_RESUMED)


@dataclass(frozen=True, slots=True)
class OrderRef:
    id: int
    external_order_id: str
    external_property_id: str
    state: str
    created_at: datetime
    updated_at: datetime
    vendor_status: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class AuditNote:
    """An audit row an item is built on (not-plannable homes, vendor cancels, write-backs)."""

    id: int
    at: datetime
    kind: str
    detail: dict[str, Any]
    external_property_id: str | None
    external_order_id: str | None


@dataclass(frozen=True, slots=True)
class QuarantinedRow:
    row_key: str
    row_hash: str
    column_name: str
    reason: str
    first_seen_at: datetime


@dataclass(frozen=True, slots=True)
class StuckOrder:
    order: OrderRef
    last_progress: datetime


_ORDER_COLUMNS = (
    orders.c.id,
    orders.c.external_order_id,
    orders.c.external_property_id,
    orders.c.state,
    orders.c.created_at,
    orders.c.updated_at,
    orders.c.vendor_status,
    orders.c.last_error,
)


def _order(row: sa.RowMapping) -> OrderRef:
    return OrderRef(
        id=int(row["id"]),
        external_order_id=str(row["external_order_id"]),
        external_property_id=str(row["external_property_id"]),
        state=str(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        vendor_status=row["vendor_status"],
        last_error=row["last_error"],
    )


def _note(row: sa.RowMapping) -> AuditNote:
    detail = row["detail"]
    return AuditNote(
        id=int(row["id"]),
        at=row["at"],
        kind=str(row["kind"]),
        detail=detail if isinstance(detail, dict) else {},
        external_property_id=row["external_property_id"],
        external_order_id=row["external_order_id"],
    )


@dataclass(frozen=True, slots=True)
class Window:
    """Which rows of a list to read: the first `limit` in the item's own order (oldest first,
    then by name), or only those named in `only`; everything when both are None."""

    limit: int | None = None
    only: Sequence[str] | None = None


EVERYTHING = Window()


def orders_in_state(
    connection: sa.Connection,
    state: OrderState,
    since: str = "created_at",
    window: Window = EVERYTHING,
) -> list[OrderRef]:
    """Orders in `state`, oldest `since` (created_at or updated_at) first."""
    query = sa.select(*_ORDER_COLUMNS).where(orders.c.state == state.value)
    if window.only is not None:
        query = query.where(orders.c.external_order_id.in_(list(window.only)))
    query = query.order_by(orders.c[since], orders.c.external_order_id).limit(window.limit)
    return [_order(row) for row in connection.execute(query).mappings().all()]


def count_orders_in_state(connection: sa.Connection, state: OrderState) -> int:
    query = sa.select(sa.func.count()).select_from(orders).where(orders.c.state == state.value)
    return int(connection.execute(query).scalar_one())


def _later_order_for_home(home: sa.ColumnElement[Any], after: sa.ColumnElement[Any]) -> Any:
    later = orders.alias("later")
    return sa.exists().where(later.c.external_property_id == home, later.c.created_at > after)


def rejected_orders(connection: sa.Connection) -> list[OrderRef]:
    """Rejected orders whose home has not been ordered again since."""
    rows = (
        connection.execute(
            sa.select(*_ORDER_COLUMNS)
            .where(
                orders.c.state == OrderState.REJECTED.value,
                ~_later_order_for_home(orders.c.external_property_id, orders.c.created_at),
            )
            .order_by(orders.c.id)
        )
        .mappings()
        .all()
    )
    return [_order(row) for row in rows]


def not_plannable_homes(connection: sa.Connection) -> list[AuditNote]:
    """Per home, its latest order_not_plannable row, unless the home was ordered since."""
    latest = (
        sa.select(sa.func.max(audit_log.c.id).label("id"))
        .where(audit_log.c.kind == AuditKind.ORDER_NOT_PLANNABLE.value)
        .group_by(audit_log.c.external_property_id)
        .subquery()
    )
    rows = (
        connection.execute(
            sa.select(audit_log)
            .join(latest, audit_log.c.id == latest.c.id)
            .where(~_later_order_for_home(audit_log.c.external_property_id, audit_log.c.at))
            .order_by(audit_log.c.id)
        )
        .mappings()
        .all()
    )
    return [_note(row) for row in rows]


def quarantined_rows(
    connection: sa.Connection, window: Window = EVERYTHING
) -> list[QuarantinedRow]:
    query = sa.select(source_quarantine)
    if window.only is not None:
        query = query.where(source_quarantine.c.row_key.in_(list(window.only)))
    query = query.order_by(source_quarantine.c.first_seen_at, source_quarantine.c.row_key)
    rows = connection.execute(query.limit(window.limit)).mappings().all()
    return [
        QuarantinedRow(
            row_key=str(row["row_key"]),
            row_hash=str(row["row_hash"]),
            column_name=str(row["column_name"]),
            reason=str(row["reason"]),
            first_seen_at=row["first_seen_at"],
        )
        for row in rows
    ]


def count_quarantined_rows(connection: sa.Connection) -> int:
    return int(
        connection.execute(sa.select(sa.func.count()).select_from(source_quarantine)).scalar_one()
    )


def api_key_refusal(connection: sa.Connection) -> AuditNote | None:
    """The refusal of the API key that paused sending, while the pause lasts.

    Read from the audit log's latest sending_paused / sending_resumed row until the pause has a
    table of its own.
    """
    # One max() per kind: each is a short walk of the (kind, at) index, where "the latest of
    # either kind by id" would scan the whole log backwards when neither kind was ever written.
    latest = {
        kind: connection.execute(
            sa.select(sa.func.max(audit_log.c.id)).where(audit_log.c.kind == kind.value)
        ).scalar()
        for kind in SENDING_KINDS
    }
    paused, resumed = latest[AuditKind.SENDING_PAUSED], latest[AuditKind.SENDING_RESUMED]
    if paused is None or (resumed is not None and resumed > paused):
        return None
    row = connection.execute(sa.select(audit_log).where(audit_log.c.id == paused)).mappings().one()
    note = _note(row)
    return note if note.detail.get("reason") == "api_key_refused" else None


def stuck_orders(connection: sa.Connection, progress_before: datetime) -> list[StuckOrder]:
    """Placed orders the vendor has not moved along since before `progress_before`.

    Progress is the latest audit row that shows the order moving (placed, a status change,
    delivered), else the order's own `updated_at`.
    """
    # The partial index's own predicate, as constants: a mature portfolio's placed orders are
    # mostly completed, and the index holds only the open ones (migration 0016).
    open_at_vendor = sa.text(OPEN_AT_VENDOR_SQL)
    progress = (
        sa.select(audit_log.c.order_id, sa.func.max(audit_log.c.at).label("last"))
        .where(
            audit_log.c.kind.in_([kind.value for kind in PROGRESS_KINDS]),
            audit_log.c.order_id.in_(sa.select(orders.c.id).where(open_at_vendor)),
        )
        .group_by(audit_log.c.order_id)
        .subquery()
    )
    last = sa.func.coalesce(progress.c.last, orders.c.updated_at, type_=UtcDateTime)
    rows = (
        connection.execute(
            sa.select(*_ORDER_COLUMNS, last.label("last_progress"))
            .select_from(orders.outerjoin(progress, progress.c.order_id == orders.c.id))
            .where(open_at_vendor, last < sa.literal(progress_before, UtcDateTime))
            .order_by(orders.c.id)
        )
        .mappings()
        .all()
    )
    return [StuckOrder(_order(row), row["last_progress"]) for row in rows]


def _latest_per_order(
    connection: sa.Connection,
    kinds: Sequence[AuditKind],
    *also: sa.ColumnElement[bool],
) -> list[AuditNote]:
    latest = (
        sa.select(sa.func.max(audit_log.c.id).label("id"))
        .where(audit_log.c.kind.in_([kind.value for kind in kinds]))
        .group_by(audit_log.c.order_id)
        .subquery()
    )
    rows = (
        connection.execute(
            sa.select(audit_log)
            .join(latest, audit_log.c.id == latest.c.id)
            .where(*also)
            .order_by(audit_log.c.id)
        )
        .mappings()
        .all()
    )
    return [_note(row) for row in rows]


def vendor_cancels(connection: sa.Connection) -> list[AuditNote]:
    """Orders PlanOmatic canceled or could not complete, whose home was not ordered since."""
    return _latest_per_order(
        connection,
        VENDOR_CANCEL_KINDS,
        ~_later_order_for_home(audit_log.c.external_property_id, audit_log.c.at),
    )


def failed_writebacks(connection: sa.Connection) -> list[AuditNote]:
    """Orders whose latest write-back attempt failed."""
    return [
        note
        for note in _latest_per_order(connection, WRITEBACK_KINDS)
        if note.kind == AuditKind.WRITEBACK_FAILED.value
    ]


# --- silences ---------------------------------------------------------------------------------


def silences(connection: sa.Connection) -> dict[str, Silence]:
    rows = connection.execute(sa.select(attention_silence)).mappings()
    return {
        str(row["item"]): Silence(
            item=str(row["item"]),
            mode="snooze" if row["mode"] == "snooze" else "ack",
            reason=str(row["reason"]),
            by=str(row["silenced_by"]),
            at=row["at"],
            until=row["silenced_until"],
            version=row["item_version"],
        )
        for row in rows
    }


def save_silence(connection: sa.Connection, silence: Silence) -> None:
    """Record an acknowledgement or snooze, replacing the item's earlier one."""
    connection.execute(attention_silence.delete().where(attention_silence.c.item == silence.item))
    connection.execute(
        attention_silence.insert().values(
            item=silence.item,
            mode=silence.mode,
            silenced_until=silence.until,
            item_version=silence.version,
            reason=silence.reason,
            silenced_by=silence.by,
            at=silence.at,
        )
    )


def purge_silences(connection: sa.Connection, before: datetime) -> int:
    """Forget snoozes that ended before `before` (acknowledgements last while their item does)."""
    result = connection.execute(
        attention_silence.delete().where(
            attention_silence.c.mode == "snooze",
            attention_silence.c.silenced_until < sa.literal(before, UtcDateTime),
        )
    )
    return int(result.rowcount)
