"""The write-back outbox store: enqueue, claim with a lease, record outcomes, list, retry.

Every function takes an open connection inside the caller's transaction. A claim is race-free
across processes and hosts: the candidate is selected `FOR UPDATE SKIP LOCKED` on PostgreSQL
(SQLite's BEGIN IMMEDIATE serialises writers anyway), and the lease is taken by an UPDATE that
repeats the "due" condition, so of two workers that saw the same row only one changes it.
Outcomes are recorded only while the recorder still holds the lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from propready.adapters.store.schema import writeback_outbox
from propready.core.writeback import WritebackParams, WritebackState

S = WritebackState
_table = writeback_outbox


def _insert(connection: sa.Connection) -> Any:
    return (pg_insert if connection.dialect.name == "postgresql" else sqlite_insert)(_table)


@dataclass(frozen=True, slots=True)
class Writeback:
    id: int
    order_id: int
    external_order_id: str
    params: WritebackParams
    state: WritebackState
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    first_failed_at: datetime | None
    last_error: str | None
    done_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: sa.RowMapping) -> Writeback:
        return cls(
            id=int(row["id"]),
            order_id=int(row["order_id"]),
            external_order_id=str(row["external_order_id"]),
            params=WritebackParams.from_json(row["params"]),
            state=WritebackState(row["state"]),
            attempts=int(row["attempts"]),
            next_attempt_at=row["next_attempt_at"],
            lease_owner=row["lease_owner"],
            lease_until=row["lease_until"],
            first_failed_at=row["first_failed_at"],
            last_error=row["last_error"],
            done_at=row["done_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


def enqueue_writeback(
    connection: sa.Connection, order_id: int, params: WritebackParams, now: datetime
) -> None:
    """Queue the write-back of one delivered order, in the caller's transaction.

    Idempotent: a second enqueue for the same order (a repeated delivery, a replay) does
    nothing, whatever state the first one reached. Call it in the transaction that marks the
    order delivered, so the two commit together (the transactional outbox).
    """
    connection.execute(
        _insert(connection)
        .values(
            order_id=order_id,
            external_order_id=params.external_order_id,
            params=params.to_json(),
            state=S.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[_table.c.order_id])
    )


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(
            _table.c.state.in_([S.PENDING.value, S.FAILED.value]),
            _table.c.next_attempt_at <= now,
        ),
        # A worker that died mid-attempt (or after the target committed): its lease ran out.
        sa.and_(_table.c.state == S.LEASED.value, _table.c.lease_until < now),
    )


def claim_due(
    connection: sa.Connection, owner: str, now: datetime, lease_seconds: float
) -> Writeback | None:
    """Lease the oldest due write-back to `owner`, counting the attempt; None when none is due."""
    candidate = connection.execute(
        sa.select(_table.c.id)
        .where(_due(now))
        .order_by(_table.c.next_attempt_at, _table.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).scalar()
    if candidate is None:
        return None
    taken = connection.execute(
        _table.update()
        .where(_table.c.id == candidate, _due(now))
        .values(
            state=S.LEASED.value,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=_table.c.attempts + 1,
            updated_at=now,
        )
    )
    if taken.rowcount != 1:
        return None  # another worker took it between the select and the update
    return get(connection, int(candidate))


def _held(writeback_id: int, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        _table.c.id == writeback_id,
        _table.c.state == S.LEASED.value,
        _table.c.lease_owner == owner,
    )


def mark_done(connection: sa.Connection, writeback_id: int, owner: str, now: datetime) -> bool:
    """The statement committed on the target; False when the lease was lost meanwhile."""
    result = connection.execute(
        _table.update()
        .where(_held(writeback_id, owner))
        .values(
            state=S.DONE.value,
            done_at=now,
            lease_owner=None,
            lease_until=None,
            first_failed_at=None,
            updated_at=now,
        )
    )
    return result.rowcount == 1


def mark_failed(
    connection: sa.Connection,
    writeback_id: int,
    owner: str,
    now: datetime,
    error: str,
    next_attempt_at: datetime | None,
) -> bool:
    """A failed attempt: due again at `next_attempt_at`, or given up when it is None."""
    values: dict[str, Any] = {
        "state": S.FAILED.value if next_attempt_at is not None else S.GIVEN_UP.value,
        "lease_owner": None,
        "lease_until": None,
        "last_error": error,
        "first_failed_at": sa.func.coalesce(_table.c.first_failed_at, now),
        "updated_at": now,
    }
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    result = connection.execute(_table.update().where(_held(writeback_id, owner)).values(**values))
    return result.rowcount == 1


def get(connection: sa.Connection, writeback_id: int) -> Writeback | None:
    row = (
        connection.execute(sa.select(_table).where(_table.c.id == writeback_id)).mappings().first()
    )
    return None if row is None else Writeback.from_row(row)


def find(connection: sa.Connection, external_order_id: str) -> Writeback | None:
    """The write-back of the order with this external_order_id, if one was queued."""
    row = (
        connection.execute(sa.select(_table).where(_table.c.external_order_id == external_order_id))
        .mappings()
        .first()
    )
    return None if row is None else Writeback.from_row(row)


def list_writebacks(
    connection: sa.Connection,
    *,
    states: Sequence[WritebackState] = (),
    limit: int = 1000,
) -> list[Writeback]:
    statement = sa.select(_table).order_by(_table.c.id).limit(limit)
    if states:
        statement = statement.where(_table.c.state.in_([state.value for state in states]))
    return [Writeback.from_row(row) for row in connection.execute(statement).mappings()]


def count_by_state(connection: sa.Connection) -> dict[str, int]:
    rows = connection.execute(
        sa.select(_table.c.state, sa.func.count()).group_by(_table.c.state)
    ).all()
    return {str(state): int(count) for state, count in rows}


RETRYABLE = (S.PENDING, S.FAILED, S.GIVEN_UP)


def request_retry(connection: sa.Connection, writeback_id: int, now: datetime) -> bool:
    """Make a waiting, failed or given-up write-back due now, with a fresh give-up period.

    False when it is done or leased right now (checked in the same statement, so a worker
    finishing meanwhile wins).
    """
    result = connection.execute(
        _table.update()
        .where(
            _table.c.id == writeback_id,
            _table.c.state.in_([state.value for state in RETRYABLE]),
        )
        .values(
            state=S.PENDING.value,
            next_attempt_at=now,
            first_failed_at=None,
            updated_at=now,
        )
    )
    return result.rowcount == 1
