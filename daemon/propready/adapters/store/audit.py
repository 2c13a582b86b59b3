"""The audit log: append-only rows written in the same transaction as the state they describe."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import audit_log
from propready.log import redact

HOST = socket.gethostname()[:255]


def record(
    connection: sa.Connection,
    kind: str,
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
    """Append one audit event; secrets in `detail` are masked before they are written."""
    connection.execute(
        audit_log.insert().values(
            at=at,
            kind=kind,
            external_property_id=external_property_id,
            trigger_name=trigger_name,
            rule_id=rule_id,
            rules_version=rules_version,
            event_id=event_id,
            order_id=order_id,
            external_order_id=external_order_id,
            host=HOST,
            detail=redact(detail or {}),
        )
    )


def query_events(
    connection: sa.Connection,
    *,
    external_property_id: str | None = None,
    kinds: Sequence[str] = (),
    rule_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Audit events matching every given filter, oldest first."""
    statement = sa.select(audit_log).order_by(audit_log.c.id)
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
    statement = statement.limit(limit)
    return [dict(row) for row in connection.execute(statement).mappings()]
