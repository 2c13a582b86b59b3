"""The audit log: append-only rows written in the same transaction as the state they describe."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.audit_chain import append_sqlite
from propready.adapters.store.schema import audit_log, orders
from propready.core.audit_kinds import AuditKind
from propready.log import redact

HOST = socket.gethostname()[:255]


def identify_host(name: str) -> None:
    """Name this process's rows after its daemon instance (`[daemon] instance_name`).

    Set once at start-up, before any row is written; hosts sharing one state database are told
    apart by it in the audit log and in `propready check`.
    """
    global HOST
    HOST = name[:255]


def record(
    connection: sa.Connection,
    kind: AuditKind,
    at: datetime,
    *,
    detail: Mapping[str, Any] | None = None,
    external_property_id: str | None = None,
    trigger_name: str | None = None,
    rule_id: str | None = None,
    rules_version: str | None = None,
    event_id: int | None = None,
    order_id: int | None = None,
    external_order_id: str | None = None,
) -> None:
    """Append one audit event; secrets in `detail` are masked before they are written.

    The row joins the hash chain: on PostgreSQL the insert trigger assigns its id and hashes
    (and serialises concurrent writers); on SQLite `append_sqlite` does the same in Python.
    """
    values: dict[str, Any] = {
        "at": at,
        "kind": AuditKind(kind).value,  # an unknown kind fails here, not in a view
        "external_property_id": external_property_id,
        "trigger_name": trigger_name,
        "rule_id": rule_id,
        "rules_version": rules_version,
        "event_id": event_id,
        "order_id": order_id,
        "external_order_id": external_order_id,
        "host": HOST,
        "detail": redact(detail or {}),
    }
    buffer = connection.info.get(_BUFFER_KEY)
    if buffer is not None:
        buffer.append(values)
        return
    _append(connection, [values])


# Where `buffered` collects rows: keyed on the connection, so record() keeps its signature.
_BUFFER_KEY = "propready_audit_buffer"


@contextmanager
def buffered(connection: sa.Connection) -> Iterator[None]:
    """Collect the audit rows recorded inside the block and append them together at its end.

    A poll batch that fires a thousand readiness events records several thousand rows; one
    multi-row INSERT instead of one round trip each is most of an incremental poll's time. The
    rows keep their order (the chain trigger runs per row, in VALUES order) and still commit in
    the caller's transaction; if the block raises, they are dropped with it.
    """
    rows: list[dict[str, Any]] = []
    connection.info[_BUFFER_KEY] = rows
    try:
        yield
        if rows:
            _append(connection, rows)
    finally:
        connection.info.pop(_BUFFER_KEY, None)


def _append(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if connection.dialect.name == "postgresql":
        # inline(): the trigger assigns the id and nobody reads it back, so no RETURNING.
        connection.execute(audit_log.insert().inline(), rows)
        return
    for values in rows:
        append_sqlite(connection, values)


def query_events(
    connection: sa.Connection,
    *,
    external_property_id: str | None = None,
    kinds: Sequence[str] = (),
    rule_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
    billing_entity_slug: str | None = None,
    external_order_id: str | None = None,
    newest_first: bool = False,
    before_id: int | None = None,
    after_id: int | None = None,
) -> list[dict[str, Any]]:
    """Audit events matching every given filter, oldest first (or the newest `limit`, newest
    first).

    An order or billing-entity filter keeps the rows of the matching orders and the rows of the
    readiness events that led to them (trigger fired, rule matched), so the story stays whole.
    """
    statement = sa.select(audit_log).order_by(
        audit_log.c.id.desc() if newest_first else audit_log.c.id
    )
    if billing_entity_slug is not None:
        statement = statement.where(
            _rows_of_orders(orders.c.billing_entity_slug == billing_entity_slug)
        )
    if external_order_id is not None:
        # The order's id and its events are looked up first, so the filter is an OR of three
        # indexed equalities instead of subqueries (an order's story on a large audit log).
        order_ids = list(
            connection.execute(
                sa.select(orders.c.id).where(orders.c.external_order_id == external_order_id)
            ).scalars()
        )
        event_ids = []
        if order_ids:
            event_ids = list(
                connection.execute(
                    sa.select(audit_log.c.event_id)
                    .where(audit_log.c.order_id.in_(order_ids), audit_log.c.event_id.is_not(None))
                    .distinct()
                ).scalars()
            )
        statement = statement.where(
            sa.or_(
                audit_log.c.external_order_id == external_order_id,
                audit_log.c.order_id.in_(order_ids),
                audit_log.c.event_id.in_(event_ids),
            )
        )
    if external_property_id is not None:
        statement = statement.where(audit_log.c.external_property_id == external_property_id)
    if kinds:
        statement = statement.where(audit_log.c.kind.in_(list(kinds)))
    if rule_id is not None:
        statement = statement.where(audit_log.c.rule_id == rule_id)
    if since is not None:
        statement = statement.where(audit_log.c.at >= since)
    if until is not None:
        statement = statement.where(audit_log.c.at < until)
    if before_id is not None:  # keyset pagination (the console's pages and CSV export)
        statement = statement.where(audit_log.c.id < before_id)
    if after_id is not None:
        statement = statement.where(audit_log.c.id > after_id)
    statement = statement.limit(limit)
    return [dict(row) for row in connection.execute(statement).mappings()]


def _rows_of_orders(which_orders: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    order_ids = sa.select(orders.c.id).where(which_orders)
    # The events that led to those orders, as the audit log itself links them.
    of_orders = audit_log.alias("of_orders")
    event_ids = sa.select(of_orders.c.event_id).where(
        of_orders.c.order_id.in_(order_ids), of_orders.c.event_id.is_not(None)
    )
    return sa.or_(audit_log.c.order_id.in_(order_ids), audit_log.c.event_id.in_(event_ids))
