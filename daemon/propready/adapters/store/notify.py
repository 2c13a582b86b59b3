"""The notification store: the audit scanner's cursor, facts, groups, the outbox and daily ticks.

Every function takes an open connection inside the caller's transaction. Coordination between
processes and hosts is in the rows themselves: the cursor row is locked while a scan runs
(`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers anyway), a
group row while its facts are batched, a message row while it is claimed; facts are unique on
(kind, subject, occurrence) and daily ticks on (name, local day).

Audit ids grow in commit order (the chain trigger assigns them under a lock held to commit), so
"every row after the cursor" misses nothing. Facts are only inserted under the cursor lock,
so fact ids grow in commit order too, and a group's `last_fact_id` is a safe watermark.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from propready.adapters.store.schema import (
    audit_log,
    notify_cursor,
    notify_fact,
    notify_group,
    notify_message,
    notify_tick,
)
from propready.core.notify_facts import AuditRow, Fact

CURSOR = "audit"
INSERT_CHUNK = 500  # rows per multi-row INSERT: SQLite allows 32,766 bound values per statement

PENDING, SENDING, SENT, FAILED, DROPPED = "pending", "sending", "sent", "failed", "dropped"


def _insert(connection: sa.Connection, table: sa.Table) -> Any:
    return (pg_insert if connection.dialect.name == "postgresql" else sqlite_insert)(table)


# --- the scanner's cursor -------------------------------------------------------------------


def lock_cursor(connection: sa.Connection) -> int | None:
    """Lock the scanner's cursor; the last audit id scanned, or None if another host scans now."""
    connection.execute(
        _insert(connection, notify_cursor)
        .values(name=CURSOR, last_audit_id=0)
        .on_conflict_do_nothing()
    )
    value = connection.execute(
        sa.select(notify_cursor.c.last_audit_id)
        .where(notify_cursor.c.name == CURSOR)
        .with_for_update(skip_locked=True)
    ).scalar()
    return None if value is None else int(value)


def audit_rows_after(
    connection: sa.Connection, after_id: int, kinds: Sequence[str], limit: int
) -> tuple[list[AuditRow], int]:
    """Audit rows of `kinds` after `after_id`, oldest first, and where the cursor may move to.

    The cursor moves past rows of other kinds too (to the log's end when fewer than `limit`
    rows matched), so a quiet scan does not re-read them.
    """
    top = connection.execute(sa.select(sa.func.max(audit_log.c.id))).scalar()
    if top is None or int(top) <= after_id:
        return [], after_id
    rows = connection.execute(
        sa.select(
            audit_log.c.id,
            audit_log.c.at,
            audit_log.c.kind,
            audit_log.c.detail,
            audit_log.c.external_property_id,
            audit_log.c.external_order_id,
        )
        .where(audit_log.c.id > after_id, audit_log.c.id <= top, audit_log.c.kind.in_(kinds))
        .order_by(audit_log.c.id)
        .limit(limit)
    ).mappings()
    found = [
        AuditRow(
            id=int(row["id"]),
            at=row["at"],
            kind=str(row["kind"]),
            detail=row["detail"] if isinstance(row["detail"], dict) else {},
            external_property_id=row["external_property_id"],
            external_order_id=row["external_order_id"],
        )
        for row in rows
    ]
    moved_to = found[-1].id if len(found) == limit else int(top)
    return found, moved_to


def save_cursor(connection: sa.Connection, last_audit_id: int, now: datetime) -> None:
    connection.execute(
        notify_cursor.update()
        .where(notify_cursor.c.name == CURSOR)
        .values(last_audit_id=last_audit_id, scanned_at=now)
    )


# --- facts ----------------------------------------------------------------------------------


def insert_facts(
    connection: sa.Connection,
    facts: Iterable[tuple[Fact, str | None]],
    now: datetime,
) -> list[tuple[Fact, str | None]]:
    """Insert (fact, suppressed_by) pairs not yet known; return the ones that were new."""
    rows = list(facts)
    new: list[tuple[Fact, str | None]] = []
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        values = [
            {
                "kind": fact.kind.value,
                "subject": fact.subject[:300],
                "occurrence": fact.occurrence[:100],
                "happened_at": fact.happened_at,
                "noted_at": now,
                "external_property_id": fact.external_property_id,
                "external_order_id": fact.external_order_id,
                "reason": fact.reason,
                "suppressed_by": suppressed_by,
            }
            for fact, suppressed_by in chunk
        ]
        inserted = connection.execute(
            _insert(connection, notify_fact)
            .values(values)
            .on_conflict_do_nothing()
            .returning(notify_fact.c.kind, notify_fact.c.subject, notify_fact.c.occurrence)
        ).all()
        keys = {(str(k), str(s), str(o)) for k, s, o in inserted}
        new.extend(
            pair
            for pair in chunk
            if (pair[0].kind.value, pair[0].subject[:300], pair[0].occurrence[:100]) in keys
        )
    return new


@dataclass(frozen=True, slots=True)
class FactRecord:
    id: int
    kind: str
    subject: str
    noted_at: datetime
    external_property_id: str | None
    external_order_id: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Pending:
    """A group's facts not yet put into a message."""

    count: int
    first_noted_at: datetime | None
    last_id: int
    examples: list[FactRecord]


def pending_facts(
    connection: sa.Connection,
    kind: str,
    after_id: int,
    *,
    silenced_subjects: Sequence[str],
    examples: int,
) -> Pending:
    """Unsuppressed facts of `kind` after `after_id`; silenced subjects are passed over.

    `last_id` is the highest fact id considered, silenced and suppressed ones included, so the
    group's watermark moves past them.
    """
    after = (notify_fact.c.kind == kind, notify_fact.c.id > after_id)
    last_id = connection.execute(sa.select(sa.func.max(notify_fact.c.id)).where(*after)).scalar()
    if last_id is None:
        return Pending(0, None, after_id, [])
    told = [*after, notify_fact.c.id <= last_id, notify_fact.c.suppressed_by.is_(None)]
    if silenced_subjects:
        told.append(notify_fact.c.subject.not_in(list(silenced_subjects)))
    count, first = connection.execute(
        sa.select(sa.func.count(), sa.func.min(notify_fact.c.noted_at)).where(*told)
    ).one()
    rows = connection.execute(
        sa.select(notify_fact).where(*told).order_by(notify_fact.c.id).limit(examples)
    ).mappings()
    return Pending(
        int(count),
        first,
        int(last_id),
        [
            FactRecord(
                id=int(row["id"]),
                kind=str(row["kind"]),
                subject=str(row["subject"]),
                noted_at=row["noted_at"],
                external_property_id=row["external_property_id"],
                external_order_id=row["external_order_id"],
                reason=row["reason"],
            )
            for row in rows
        ],
    )


def told_since(connection: sa.Connection, since: datetime) -> dict[str, int]:
    """Facts noted since `since` that were not suppressed, per kind (for the digest)."""
    rows = connection.execute(
        sa.select(notify_fact.c.kind, sa.func.count())
        .where(notify_fact.c.noted_at >= since, notify_fact.c.suppressed_by.is_(None))
        .group_by(notify_fact.c.kind)
    ).all()
    return {str(kind): int(count) for kind, count in rows}


def count_facts(connection: sa.Connection, kind: str | None = None) -> int:
    statement = sa.select(sa.func.count()).select_from(notify_fact)
    if kind is not None:
        statement = statement.where(notify_fact.c.kind == kind)
    return int(connection.execute(statement).scalar_one())


# --- groups ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Group:
    channel: str
    kind: str
    last_fact_id: int
    last_message_at: datetime | None


def lock_group(
    connection: sa.Connection, channel: str, kind: str, new_group_since: datetime
) -> Group | None:
    """Lock one (channel, kind) group, creating it if new; None while another host holds it.

    A new group (a channel just configured, or a kind just enabled) starts after the facts
    noted before `new_group_since`, so it is not sent old news.
    """
    exists = connection.execute(
        sa.select(notify_group.c.channel).where(
            notify_group.c.channel == channel, notify_group.c.kind == kind
        )
    ).first()
    if exists is None:
        start = connection.execute(
            sa.select(sa.func.max(notify_fact.c.id)).where(
                notify_fact.c.kind == kind, notify_fact.c.noted_at < new_group_since
            )
        ).scalar()
        connection.execute(
            _insert(connection, notify_group)
            .values(channel=channel, kind=kind, last_fact_id=int(start or 0))
            .on_conflict_do_nothing()
        )
    row = (
        connection.execute(
            sa.select(notify_group)
            .where(notify_group.c.channel == channel, notify_group.c.kind == kind)
            .with_for_update(skip_locked=True)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return Group(channel, kind, int(row["last_fact_id"]), row["last_message_at"])


def advance_group(
    connection: sa.Connection,
    channel: str,
    kind: str,
    last_fact_id: int,
    message_at: datetime | None,
) -> None:
    values: dict[str, Any] = {"last_fact_id": last_fact_id}
    if message_at is not None:
        values["last_message_at"] = message_at
    connection.execute(
        notify_group.update()
        .where(notify_group.c.channel == channel, notify_group.c.kind == kind)
        .values(**values)
    )


# --- the outbox -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    batch_id: str
    channel: str
    kind: str
    severity: str
    title: str
    body: str
    fact_count: int
    state: str
    created_at: datetime
    attempts: int
    first_failed_at: datetime | None
    last_error: str | None
    sent_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.RowMapping) -> Message:
        return cls(
            id=int(row["id"]),
            batch_id=str(row["batch_id"]),
            channel=str(row["channel"]),
            kind=str(row["kind"]),
            severity=str(row["severity"]),
            title=str(row["title"]),
            body=str(row["body"]),
            fact_count=int(row["fact_count"]),
            state=str(row["state"]),
            created_at=row["created_at"],
            attempts=int(row["attempts"]),
            first_failed_at=row["first_failed_at"],
            last_error=row["last_error"],
            sent_at=row["sent_at"],
        )


def insert_message(
    connection: sa.Connection,
    *,
    batch_id: str,
    channel: str,
    kind: str,
    severity: str,
    title: str,
    body: str,
    fact_count: int,
    now: datetime,
) -> None:
    connection.execute(
        notify_message.insert().values(
            batch_id=batch_id,
            channel=channel,
            kind=kind,
            severity=severity,
            title=title,
            body=body,
            fact_count=fact_count,
            state=PENDING,
            created_at=now,
            attempts=0,
            next_attempt_at=now,
        )
    )


def claim_message(
    connection: sa.Connection,
    owner: str,
    now: datetime,
    lease_seconds: float,
    skip_channels: Sequence[str] = (),
) -> Message | None:
    """Lease the oldest due message to `owner`.

    Due: pending and its next attempt has come, or left `sending` by a sender whose lease
    expired (it may have died after sending and before recording: sending again is the one
    duplicate the outbox allows, recognisable by its batch id).
    """
    due = sa.or_(
        sa.and_(notify_message.c.state == PENDING, notify_message.c.next_attempt_at <= now),
        sa.and_(notify_message.c.state == SENDING, notify_message.c.lease_until < now),
    )
    statement = (
        sa.select(notify_message.c.id)
        .where(due)
        .order_by(notify_message.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if skip_channels:
        statement = statement.where(notify_message.c.channel.not_in(list(skip_channels)))
    message_id = connection.execute(statement).scalar()
    if message_id is None:
        return None
    connection.execute(
        notify_message.update()
        .where(notify_message.c.id == message_id)
        .values(
            state=SENDING,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=notify_message.c.attempts + 1,
        )
    )
    row = (
        connection.execute(sa.select(notify_message).where(notify_message.c.id == message_id))
        .mappings()
        .one()
    )
    return Message.from_row(row)


def _while_held(message_id: int, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        notify_message.c.id == message_id,
        notify_message.c.state == SENDING,
        notify_message.c.lease_owner == owner,
    )


def record_sent(connection: sa.Connection, message_id: int, owner: str, now: datetime) -> bool:
    result = connection.execute(
        notify_message.update()
        .where(_while_held(message_id, owner))
        .values(state=SENT, sent_at=now, lease_owner=None, lease_until=None, last_error=None)
    )
    return result.rowcount == 1


def record_failure(
    connection: sa.Connection,
    message_id: int,
    owner: str,
    now: datetime,
    error: str,
    next_attempt_at: datetime | None,
) -> bool:
    """A failed attempt: due again at `next_attempt_at`, or given up (failed) when None."""
    values: dict[str, Any] = {
        "state": PENDING if next_attempt_at is not None else FAILED,
        "lease_owner": None,
        "lease_until": None,
        "last_error": error,
        "first_failed_at": sa.func.coalesce(notify_message.c.first_failed_at, now),
    }
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    result = connection.execute(
        notify_message.update().where(_while_held(message_id, owner)).values(**values)
    )
    return result.rowcount == 1


def drop_message(connection: sa.Connection, message_id: int, owner: str, reason: str) -> None:
    """The channel is no longer configured: the message can never be sent."""
    connection.execute(
        notify_message.update()
        .where(_while_held(message_id, owner))
        .values(state=DROPPED, lease_owner=None, lease_until=None, last_error=reason)
    )


@dataclass(frozen=True, slots=True)
class FailingChannel:
    channel: str
    failing_since: datetime
    last_error: str | None
    waiting: int


def failing_channels(connection: sa.Connection) -> list[FailingChannel]:
    """Channels with unsent messages that already failed, with the oldest first failure."""
    waiting = notify_message.c.state.in_([PENDING, SENDING])
    rows = connection.execute(
        sa.select(
            notify_message.c.channel,
            sa.func.min(notify_message.c.first_failed_at),
            sa.func.count(),
        )
        .where(waiting, notify_message.c.first_failed_at.is_not(None))
        .group_by(notify_message.c.channel)
    ).all()
    found = []
    for channel, since, count in rows:
        last_error = connection.execute(
            sa.select(notify_message.c.last_error)
            .where(waiting, notify_message.c.channel == channel)
            .where(notify_message.c.last_error.is_not(None))
            .order_by(notify_message.c.id.desc())
            .limit(1)
        ).scalar()
        found.append(FailingChannel(str(channel), since, last_error, int(count)))
    return found


def messages(
    connection: sa.Connection, *, state: str | None = None, limit: int = 1000
) -> list[Message]:
    statement = sa.select(notify_message).order_by(notify_message.c.id).limit(limit)
    if state is not None:
        statement = statement.where(notify_message.c.state == state)
    return [Message.from_row(row) for row in connection.execute(statement).mappings()]


def failed_since(connection: sa.Connection, since: datetime) -> int:
    """Messages given up or still failing that were created since `since`."""
    return int(
        connection.execute(
            sa.select(sa.func.count()).where(
                notify_message.c.created_at >= since,
                sa.or_(
                    notify_message.c.state == FAILED,
                    notify_message.c.first_failed_at.is_not(None)
                    & (notify_message.c.state != SENT),
                ),
            )
        ).scalar_one()
    )


# --- daily ticks and retention ----------------------------------------------------------------


def take_tick(connection: sa.Connection, name: str, local_day: str, now: datetime) -> bool:
    """Claim the (name, local day) tick; False when it was already taken (by any host)."""
    taken = connection.execute(
        _insert(connection, notify_tick)
        .values(name=name, local_day=local_day, at=now)
        .on_conflict_do_nothing()
        .returning(notify_tick.c.name)
    ).first()
    return taken is not None


def tick_taken(connection: sa.Connection, name: str, local_day: str) -> bool:
    found = connection.execute(
        sa.select(notify_tick.c.name).where(
            notify_tick.c.name == name, notify_tick.c.local_day == local_day
        )
    ).first()
    return found is not None


def last_tick_at(connection: sa.Connection, name: str) -> datetime | None:
    value = connection.execute(
        sa.select(sa.func.max(notify_tick.c.at)).where(notify_tick.c.name == name)
    ).scalar()
    return value if isinstance(value, datetime) else None


def purge_before(connection: sa.Connection, before: datetime) -> int:
    """Forget facts, finished messages and ticks older than `before`; how many rows went."""
    removed = connection.execute(
        notify_fact.delete().where(notify_fact.c.noted_at < before)
    ).rowcount
    removed += connection.execute(
        notify_message.delete().where(
            notify_message.c.created_at < before,
            notify_message.c.state.in_([SENT, FAILED, DROPPED]),
        )
    ).rowcount
    removed += connection.execute(notify_tick.delete().where(notify_tick.c.at < before)).rowcount
    return int(removed)
