"""What the poller remembers between cycles: property state, trigger memory, events, checkpoints,
quarantined rows. Writes are batched: one statement per batch and kind, not one per property.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from propready.adapters.store.schema import (
    property_state,
    readiness_event,
    source_checkpoint,
    source_quarantine,
)
from propready.core.batch_plan import PropertyWrite, Quarantine, TriggerWrite
from propready.core.checkpoint import Checkpoint
from propready.core.facts import facts_for_storage
from propready.core.model import Edge, EventState, OpenEvent
from propready.core.triggers import StoredProperty, TriggerMemory, encode_memory


def _id_filter(connection: sa.Connection, property_ids: Sequence[str]) -> sa.ColumnElement[bool]:
    column = property_state.c.external_property_id
    if connection.dialect.name == "postgresql":
        # One array parameter instead of thousands of placeholders: a batch of 5,000 ids costs
        # psycopg far less to send, and PostgreSQL the same index scan.
        return column == sa.any_(
            sa.bindparam("ids", list(property_ids), type_=postgresql.ARRAY(sa.String))
        )
    return column.in_(property_ids)


def load_properties(
    connection: sa.Connection,
    property_ids: Sequence[str],
    *,
    with_facts: bool,
    complete_keys: Collection[str] | None = None,
) -> dict[str, StoredProperty]:
    """Stored state for a batch of ids; an id missing from the result was never seen.

    With `complete_keys` (trigger names), PostgreSQL answers per id only its fingerprint and
    whether its memory holds every one of them (`StoredProperty.complete`), not the memory
    itself: all a poll needs of an unchanged row. Elsewhere the memory comes as usual.
    """
    if not property_ids:
        return {}
    if connection.dialect.name == "postgresql" and not with_facts:
        return _load_fingerprints_postgresql(connection, property_ids, complete_keys)
    columns: list[sa.ColumnElement[Any]] = [
        property_state.c.external_property_id,
        property_state.c.row_hash,
        sa.cast(property_state.c.triggers, sa.Text),
    ]
    if with_facts:
        columns.append(property_state.c.facts)
    rows = connection.execute(sa.select(*columns).where(_id_filter(connection, property_ids)))
    return {row[0]: StoredProperty(row[1], row[2], row[3] if with_facts else None) for row in rows}


def _load_fingerprints_postgresql(
    connection: sa.Connection,
    property_ids: Sequence[str],
    complete_keys: Collection[str] | None,
) -> dict[str, StoredProperty]:
    # The hot path of every poll (a lookup per batch of 5,000 rows): through the driver's own
    # cursor, which costs a fraction of SQLAlchemy's per-row result processing.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    # The ids travel as one newline-separated text, split by the server: the driver's array
    # adapter escapes each element in Python, a cost of its own at 5,000 ids a batch. An id
    # never holds a newline (ids with control characters are refused before this); should one
    # slip through, the array form is used.
    joined = "\n".join(property_ids)
    argument: str | list[str] = joined
    where = "ANY(string_to_array(%s, E'\\n'))"
    if joined.count("\n") != len(property_ids) - 1:
        where, argument = "ANY(%s)", list(property_ids)
    try:
        if complete_keys is not None:
            cursor.execute(
                "SELECT external_property_id, row_hash, triggers ?& %s FROM property_state "
                f"WHERE external_property_id = {where}",
                (list(complete_keys), argument),
            )
            return {
                pid: StoredProperty(row_hash, None, complete=complete)
                for pid, row_hash, complete in cursor.fetchall()
            }
        cursor.execute(
            "SELECT external_property_id, row_hash, triggers::text FROM property_state "
            f"WHERE external_property_id = {where}",
            (argument,),
        )
        return {
            pid: StoredProperty(row_hash, memory) for pid, row_hash, memory in cursor.fetchall()
        }
    finally:
        cursor.close()


def insert_properties(
    connection: sa.Connection, writes: Sequence[PropertyWrite], now: datetime
) -> None:
    """Bulk insert of properties seen for the first time (facts as typed values).

    On PostgreSQL the rows go through COPY: a first pass over a large portfolio inserts every
    home, and COPY is several times faster than even batched INSERTs.
    """
    if not writes:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(
            property_state.insert(),
            [
                {
                    "external_property_id": w.external_property_id,
                    "row_hash": w.row_hash,
                    "facts": facts_for_storage(w.facts),
                    "triggers": encode_memory(w.triggers),
                    "first_seen_at": now,
                    "last_changed_at": now,
                }
                for w in writes
            ],
        )
        return
    columns = (
        "external_property_id",
        "row_hash",
        "facts",
        "triggers",
        "first_seen_at",
        "last_changed_at",
    )
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY property_state ({', '.join(columns)}) FROM STDIN") as copy:
            for w in writes:
                copy.write_row(
                    (
                        w.external_property_id,
                        w.row_hash,
                        _facts_json(w.facts),
                        memory_json(w.triggers),
                        now,
                        now,
                    )
                )
    finally:
        cursor.close()


def _facts_json(facts: Mapping[str, Any]) -> str:
    if not facts:
        return "{}"
    return json.dumps(facts, default=_json_value, separators=(",", ":"))


def memory_json(memory: Mapping[str, TriggerMemory]) -> str:
    """Trigger memory as JSON text, built directly: a first pass writes it for every home."""
    # Trigger names are identifiers ([A-Za-z][A-Za-z0-9_]*): nothing in them needs escaping.
    return (
        "{"
        + ",".join(
            f'"{name}":[{"true" if m.is_true else "false"},{m.edge_count}]'
            for name, m in memory.items()
        )
        + "}"
    )


def _json_value(value: Any) -> Any:
    """JSON for the values json cannot encode itself: the same forms as facts_for_storage."""
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot store a {type(value).__name__} as a fact")


def update_changed_properties(
    connection: sa.Connection, writes: Sequence[PropertyWrite], now: datetime
) -> None:
    """Bulk update of properties whose source row changed (hash, facts, trigger memory)."""
    if not writes:
        return
    connection.execute(
        property_state.update()
        .where(property_state.c.external_property_id == sa.bindparam("pid"))
        .values(
            row_hash=sa.bindparam("row_hash"),
            facts=sa.bindparam("facts"),
            triggers=sa.bindparam("triggers"),
            last_changed_at=sa.bindparam("last_changed_at"),
        ),
        [
            {
                "pid": w.external_property_id,
                "row_hash": w.row_hash,
                "facts": facts_for_storage(w.facts),
                "triggers": encode_memory(w.triggers),
                "last_changed_at": now,
            }
            for w in writes
        ],
    )


def update_trigger_memory(connection: sa.Connection, writes: Sequence[TriggerWrite]) -> None:
    """Bulk update of trigger memory alone, for unchanged rows whose time-based triggers moved."""
    if not writes:
        return
    connection.execute(
        property_state.update()
        .where(property_state.c.external_property_id == sa.bindparam("pid"))
        .values(triggers=sa.bindparam("triggers")),
        [{"pid": w.external_property_id, "triggers": encode_memory(w.triggers)} for w in writes],
    )


def iter_properties(
    connection: sa.Connection, batch_size: int = 2000
) -> Iterator[tuple[str, dict[str, TriggerMemory]]]:
    """Every remembered property's id and trigger memory, streamed, in id order."""
    result = connection.execution_options(stream_results=True, yield_per=batch_size).execute(
        sa.select(
            property_state.c.external_property_id,
            sa.cast(property_state.c.triggers, sa.Text),
        ).order_by(property_state.c.external_property_id)
    )
    for property_id, triggers_json in result:
        yield property_id, StoredProperty("", triggers_json).triggers


def save_property_triggers(
    connection: sa.Connection, property_id: str, memory: Mapping[str, TriggerMemory]
) -> None:
    connection.execute(
        property_state.update()
        .where(property_state.c.external_property_id == property_id)
        .values(triggers=encode_memory(memory))
    )


def insert_readiness_events(
    connection: sa.Connection,
    events: Sequence[tuple[str, Edge, Mapping[str, Any]]],
    now: datetime,
) -> list[int | None]:
    """Store each (property, edge, facts) once; the event's id, or None when that edge is
    already stored (a repeated or overlapping poll).

    One statement for the whole batch: the unique key decides, so two overlapping polls cannot
    both store an edge. The events are decided in the same transaction, so `decided_at` is set
    with them.
    """
    if not events:
        return []
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(readiness_event)
        .values(
            [
                {
                    "external_property_id": property_id,
                    "trigger_name": edge.trigger_name,
                    "edge_seq": edge.edge_seq,
                    "kind": edge.kind,
                    "fired_at": now,
                    "facts": dict(facts),
                    "decided_at": now,
                }
                for property_id, edge, facts in events
            ]
        )
        .on_conflict_do_nothing(index_elements=["external_property_id", "trigger_name", "edge_seq"])
        .returning(
            readiness_event.c.id,
            readiness_event.c.external_property_id,
            readiness_event.c.trigger_name,
            readiness_event.c.edge_seq,
        )
    )
    stored = {
        (pid, trigger, seq): int(event_id)
        for event_id, pid, trigger, seq in connection.execute(statement)
    }
    return [stored.get((pid, edge.trigger_name, edge.edge_seq)) for pid, edge, _ in events]


@dataclass(frozen=True, slots=True)
class EventUpdate:
    """Where a readiness event stands after a decision (or a re-plan) was recorded."""

    event_id: int
    state: EventState
    plan_basis: str | None
    plan_attempts: int
    open_reason: str | None = None


def update_events(connection: sa.Connection, updates: Sequence[EventUpdate]) -> None:
    """Record each event's state, plan basis and attempts (one statement for the batch)."""
    if not updates:
        return
    connection.execute(
        readiness_event.update()
        .where(readiness_event.c.id == sa.bindparam("event_id"))
        .values(
            state=sa.bindparam("state"),
            plan_basis=sa.bindparam("plan_basis"),
            plan_attempts=sa.bindparam("plan_attempts"),
            open_reason=sa.bindparam("open_reason"),
        ),
        [
            {
                "event_id": u.event_id,
                "state": u.state.value,
                "plan_basis": u.plan_basis,
                "plan_attempts": u.plan_attempts,
                "open_reason": u.open_reason[:2000] if u.open_reason else None,
            }
            for u in updates
        ],
    )


def load_open_events(connection: sa.Connection) -> dict[str, list[OpenEvent]]:
    """Every open readiness event, by home (few: only what a person can still fix)."""
    rows = connection.execute(
        sa.select(
            readiness_event.c.id,
            readiness_event.c.external_property_id,
            readiness_event.c.trigger_name,
            readiness_event.c.edge_seq,
            readiness_event.c.kind,
            readiness_event.c.plan_attempts,
            readiness_event.c.plan_basis,
        )
        .where(readiness_event.c.state == EventState.OPEN.value)
        .order_by(readiness_event.c.id)
    ).mappings()
    found: dict[str, list[OpenEvent]] = {}
    for row in rows:
        event = OpenEvent.from_row(row)
        found.setdefault(event.external_property_id, []).append(event)
    return found


def reopen_event(connection: sa.Connection, event_id: int | None, reason: str) -> bool:
    """An order of this readiness came to nothing a person cannot fix: plan it again when the
    home's row, the rules or the configuration change (its plan basis is kept)."""
    if event_id is None:
        return False
    result = connection.execute(
        readiness_event.update()
        .where(
            readiness_event.c.id == event_id,
            readiness_event.c.state == EventState.ORDERED.value,
        )
        .values(state=EventState.OPEN.value, open_reason=reason[:2000])
    )
    return result.rowcount == 1


def latest_event(
    connection: sa.Connection, property_id: str, trigger_name: str | None = None
) -> OpenEvent | None:
    """The home's most recent readiness event (of one trigger, when given), in any state."""
    statement = (
        sa.select(
            readiness_event.c.id,
            readiness_event.c.external_property_id,
            readiness_event.c.trigger_name,
            readiness_event.c.edge_seq,
            readiness_event.c.kind,
            readiness_event.c.plan_attempts,
            readiness_event.c.plan_basis,
        )
        .where(readiness_event.c.external_property_id == property_id)
        .order_by(readiness_event.c.id.desc())
        .limit(1)
    )
    if trigger_name is not None:
        statement = statement.where(readiness_event.c.trigger_name == trigger_name)
    row = connection.execute(statement).mappings().first()
    return OpenEvent.from_row(row) if row is not None else None


# --- quarantine ------------------------------------------------------------------------------


def load_quarantine(connection: sa.Connection) -> dict[str, str]:
    """Every held row: row key -> the hash of the row as it was quarantined.

    Read once per poll: the table holds only the rows that are wrong right now, so it stays
    small, and one read replaces a lookup per batch.
    """
    rows = connection.execute(sa.select(source_quarantine.c.row_key, source_quarantine.c.row_hash))
    return {str(key): str(row_hash) for key, row_hash in rows}


def save_quarantines(
    connection: sa.Connection, quarantines: Sequence[Quarantine], now: datetime
) -> None:
    """Hold new rows and record the new version of rows already held."""
    fresh = [q for q in quarantines if not q.known]
    known = [q for q in quarantines if q.known]
    if fresh:
        connection.execute(
            source_quarantine.insert(),
            [
                {
                    "row_key": q.row_key,
                    "row_hash": q.row_hash,
                    "column_name": q.problem.column,
                    "reason": q.problem.reason,
                    "first_seen_at": now,
                    "last_seen_at": now,
                }
                for q in fresh
            ],
        )
    if known:
        connection.execute(
            source_quarantine.update()
            .where(source_quarantine.c.row_key == sa.bindparam("key"))
            .values(
                row_hash=sa.bindparam("row_hash"),
                column_name=sa.bindparam("column_name"),
                reason=sa.bindparam("reason"),
                last_seen_at=sa.bindparam("last_seen_at"),
            ),
            [
                {
                    "key": q.row_key,
                    "row_hash": q.row_hash,
                    "column_name": q.problem.column,
                    "reason": q.problem.reason,
                    "last_seen_at": now,
                }
                for q in known
            ],
        )


def release_quarantine(connection: sa.Connection, row_keys: Sequence[str]) -> None:
    if row_keys:
        connection.execute(
            source_quarantine.delete().where(source_quarantine.c.row_key.in_(row_keys))
        )


# --- checkpoint and source health ------------------------------------------------------------

# pg_advisory_lock key for "a poll is running": any 64-bit number no other application uses.
POLL_LOCK_KEY = 0x70726F706F6C6C  # "propoll"


@contextmanager
def exclusive_poll(engine: sa.Engine) -> Iterator[bool]:
    """Hold "the" poll for the duration of the block; yield whether this process got it.

    On PostgreSQL a session advisory lock makes polls exclusive across processes and hosts; on
    SQLite (one host by design) an advisory lock on a file beside the database does the same for
    processes. A poll then reads what it needs, decides without holding the database's write
    lock (rules may take a while), and writes; no other poller can change the same rows between.
    """
    if engine.dialect.name != "postgresql":
        with _sqlite_poll_lock(engine) as got:
            yield got
        return
    with engine.connect() as connection:
        got = bool(
            connection.execute(sa.select(sa.func.pg_try_advisory_lock(POLL_LOCK_KEY))).scalar()
        )
        connection.commit()
        try:
            yield got
        finally:
            if got:
                connection.execute(sa.select(sa.func.pg_advisory_unlock(POLL_LOCK_KEY)))
                connection.commit()


@contextmanager
def _sqlite_poll_lock(engine: sa.Engine) -> Iterator[bool]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield True  # one connection, one process: nobody to exclude
        return
    path = Path(database).with_name(Path(database).name + ".poll-lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_checkpoint(connection: sa.Connection, name: str) -> Checkpoint:
    row = (
        connection.execute(sa.select(source_checkpoint).where(source_checkpoint.c.name == name))
        .mappings()
        .first()
    )
    if row is None:
        return Checkpoint(name)
    data = dict(row)
    data["cursor_value"] = json.loads(data["cursor_value"]) if data["cursor_value"] else None
    return Checkpoint.from_row(data)


def save_checkpoint(connection: sa.Connection, name: str, **values: Any) -> None:
    """Upsert the named checkpoint's columns given (cursor_value is JSON-encoded here)."""
    if "cursor_value" in values and values["cursor_value"] is not None:
        values["cursor_value"] = json.dumps(values["cursor_value"])
    updated = connection.execute(
        source_checkpoint.update().where(source_checkpoint.c.name == name).values(**values)
    )
    if updated.rowcount == 0:
        connection.execute(source_checkpoint.insert().values(name=name, **values))
