"""What the poller remembers between cycles: property state, trigger memory, events, checkpoints,
quarantined rows. Writes are batched: one statement per batch and kind, not one per property.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from propready.adapters.store.schema import (
    property_state,
    readiness_event,
    source_checkpoint,
    source_quarantine,
)
from propready.core.facts import facts_for_storage
from propready.core.model import Edge
from propready.core.triggers import TriggerMemory


class StoredProperty:
    """A remembered property; its trigger memory is decoded only when someone needs it.

    Most polled rows are unchanged, and for them the poll only compares the fingerprint and
    checks that every trigger has a memory: decoding JSON for a million rows is wasted work.
    """

    __slots__ = ("_decoded", "facts", "row_hash", "triggers_json")

    def __init__(self, row_hash: str, triggers_json: str, facts: Mapping[str, Any] | None = None):
        self.row_hash = row_hash
        self.triggers_json = triggers_json or "{}"
        self.facts = facts  # loaded only when a trigger reads `previous`
        self._decoded: dict[str, TriggerMemory] | None = None

    @property
    def triggers(self) -> dict[str, TriggerMemory]:
        if self._decoded is None:
            self._decoded = decode_triggers(json.loads(self.triggers_json))
        return self._decoded

    def remembers_all(self, names: frozenset[str]) -> bool:
        """Whether every trigger in `names` has a memory (a JSON key), without decoding."""
        return all(f'"{name}"' in self.triggers_json for name in names)


def encode_triggers(memory: Mapping[str, TriggerMemory]) -> dict[str, list[Any]]:
    return {name: [m.is_true, m.edge_count] for name, m in memory.items()}


def decode_triggers(data: Mapping[str, Any] | None) -> dict[str, TriggerMemory]:
    return {name: TriggerMemory(bool(v[0]), int(v[1])) for name, v in (data or {}).items()}


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
    connection: sa.Connection, property_ids: Sequence[str], *, with_facts: bool
) -> dict[str, StoredProperty]:
    """Stored state for a batch of ids; an id missing from the result was never seen."""
    if not property_ids:
        return {}
    columns: list[sa.ColumnElement[Any]] = [
        property_state.c.external_property_id,
        property_state.c.row_hash,
        sa.cast(property_state.c.triggers, sa.Text),
    ]
    if with_facts:
        columns.append(property_state.c.facts)
    rows = connection.execute(sa.select(*columns).where(_id_filter(connection, property_ids)))
    return {row[0]: StoredProperty(row[1], row[2], row[3] if with_facts else None) for row in rows}


def insert_properties(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Bulk insert of properties seen for the first time (facts as typed values).

    On PostgreSQL the rows go through COPY: a first pass over a large portfolio inserts every
    home, and COPY is several times faster than even batched INSERTs.
    """
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(
            property_state.insert(),
            [{**row, "facts": facts_for_storage(row["facts"])} for row in rows],
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
            for row in rows:
                copy.write_row(
                    (
                        row["external_property_id"],
                        row["row_hash"],
                        json.dumps(row["facts"], default=_json_value, separators=(",", ":")),
                        json.dumps(row["triggers"], separators=(",", ":")),
                        row["first_seen_at"],
                        row["last_changed_at"],
                    )
                )
    finally:
        cursor.close()


def _json_value(value: Any) -> Any:
    """JSON for the values json cannot encode itself: the same forms as facts_for_storage."""
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot store a {type(value).__name__} as a fact")


def update_changed_properties(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Bulk update of properties whose source row changed (hash, facts, trigger memory)."""
    if not rows:
        return
    rows = [{**row, "facts": facts_for_storage(row["facts"])} for row in rows]
    connection.execute(
        property_state.update()
        .where(property_state.c.external_property_id == sa.bindparam("pid"))
        .values(
            row_hash=sa.bindparam("row_hash"),
            facts=sa.bindparam("facts"),
            triggers=sa.bindparam("triggers"),
            last_changed_at=sa.bindparam("last_changed_at"),
        ),
        rows,
    )


def update_trigger_memory(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Bulk update of trigger memory alone, for unchanged rows whose time-based triggers moved."""
    if not rows:
        return
    connection.execute(
        property_state.update()
        .where(property_state.c.external_property_id == sa.bindparam("pid"))
        .values(triggers=sa.bindparam("triggers")),
        rows,
    )


def iter_properties(
    connection: sa.Connection, batch_size: int = 2000
) -> Iterator[Mapping[str, Any]]:
    """Every remembered property (id, trigger memory), streamed, in id order."""
    result = connection.execution_options(stream_results=True, yield_per=batch_size).execute(
        sa.select(
            property_state.c.external_property_id,
            property_state.c.triggers,
        ).order_by(property_state.c.external_property_id)
    )
    for row in result.mappings():
        yield dict(row)


def save_property_triggers(
    connection: sa.Connection, property_id: str, memory: Mapping[str, TriggerMemory]
) -> None:
    connection.execute(
        property_state.update()
        .where(property_state.c.external_property_id == property_id)
        .values(triggers=encode_triggers(memory))
    )


def insert_readiness_event(
    connection: sa.Connection,
    property_id: str,
    edge: Edge,
    facts: Mapping[str, Any],
    now: datetime,
) -> int | None:
    """Store the event once; None when this edge is already stored (a repeated poll).

    One statement: the unique key decides, so two overlapping polls cannot both store it.
    """
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(readiness_event)
        .values(
            external_property_id=property_id,
            trigger_name=edge.trigger_name,
            edge_seq=edge.edge_seq,
            kind=edge.kind,
            fired_at=now,
            facts=dict(facts),
        )
        .on_conflict_do_nothing(index_elements=["external_property_id", "trigger_name", "edge_seq"])
        .returning(readiness_event.c.id)
    )
    event_id = connection.execute(statement).scalar()
    return int(event_id) if event_id is not None else None


def mark_event_decided(connection: sa.Connection, event_id: int, now: datetime) -> None:
    connection.execute(
        readiness_event.update().where(readiness_event.c.id == event_id).values(decided_at=now)
    )


# --- quarantine ------------------------------------------------------------------------------


def quarantined(connection: sa.Connection, row_keys: Sequence[str]) -> dict[str, str]:
    """Row key -> the hash of the row as it was quarantined, for the keys given."""
    if not row_keys:
        return {}
    rows = connection.execute(
        sa.select(source_quarantine.c.row_key, source_quarantine.c.row_hash).where(
            source_quarantine.c.row_key.in_(row_keys)
        )
    )
    return {str(key): str(row_hash) for key, row_hash in rows}


def quarantine_row(
    connection: sa.Connection,
    row_key: str,
    row_hash: str,
    column: str,
    reason: str,
    now: datetime,
    *,
    known: bool,
) -> None:
    values = {"row_hash": row_hash, "column_name": column, "reason": reason, "last_seen_at": now}
    if known:
        connection.execute(
            source_quarantine.update()
            .where(source_quarantine.c.row_key == row_key)
            .values(**values)
        )
    else:
        connection.execute(
            source_quarantine.insert().values(row_key=row_key, first_seen_at=now, **values)
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

    On PostgreSQL a session advisory lock makes polls exclusive across processes and hosts, so
    two pollers never race to insert the same new property. SQLite needs none: every batch runs
    under BEGIN IMMEDIATE, so a second poller sees the first one's committed rows.
    """
    if engine.dialect.name != "postgresql":
        yield True
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


def load_checkpoint(connection: sa.Connection, name: str) -> dict[str, Any]:
    row = (
        connection.execute(sa.select(source_checkpoint).where(source_checkpoint.c.name == name))
        .mappings()
        .first()
    )
    if row is None:
        return {"name": name, "cursor_value": None, "consecutive_failures": 0}
    data = dict(row)
    data["cursor_value"] = json.loads(data["cursor_value"]) if data["cursor_value"] else None
    return data


def save_checkpoint(connection: sa.Connection, name: str, **values: Any) -> None:
    """Upsert the named checkpoint's columns given (cursor_value is JSON-encoded here)."""
    if "cursor_value" in values and values["cursor_value"] is not None:
        values["cursor_value"] = json.dumps(values["cursor_value"])
    updated = connection.execute(
        source_checkpoint.update().where(source_checkpoint.c.name == name).values(**values)
    )
    if updated.rowcount == 0:
        connection.execute(source_checkpoint.insert().values(name=name, **values))
