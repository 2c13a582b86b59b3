"""What the poller remembers between cycles: property state, trigger memory, events, checkpoints,
quarantined rows. Writes are batched: one statement per batch and kind, not one per property.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import (
    property_state,
    readiness_event,
    source_checkpoint,
    source_quarantine,
)
from propready.core.model import Edge
from propready.core.triggers import TriggerMemory


@dataclass(frozen=True, slots=True)
class StoredProperty:
    row_hash: str
    triggers: dict[str, TriggerMemory]
    facts: Mapping[str, Any] | None = None  # loaded only when a trigger reads `previous`


def encode_triggers(memory: Mapping[str, TriggerMemory]) -> dict[str, list[Any]]:
    return {name: [m.is_true, m.edge_count] for name, m in memory.items()}


def decode_triggers(data: Mapping[str, Any] | None) -> dict[str, TriggerMemory]:
    return {name: TriggerMemory(bool(v[0]), int(v[1])) for name, v in (data or {}).items()}


def load_properties(
    connection: sa.Connection, property_ids: Sequence[str], *, with_facts: bool
) -> dict[str, StoredProperty]:
    """Stored state for a batch of ids; an id missing from the result was never seen."""
    if not property_ids:
        return {}
    columns = [
        property_state.c.external_property_id,
        property_state.c.row_hash,
        property_state.c.triggers,
    ]
    if with_facts:
        columns.append(property_state.c.facts)
    rows = connection.execute(
        sa.select(*columns).where(property_state.c.external_property_id.in_(property_ids))
    )
    return {
        row[0]: StoredProperty(row[1], decode_triggers(row[2]), row[3] if with_facts else None)
        for row in rows
    }


def insert_properties(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Bulk insert of properties seen for the first time."""
    if rows:
        connection.execute(property_state.insert(), rows)


def update_changed_properties(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Bulk update of properties whose source row changed (hash, facts, trigger memory)."""
    if not rows:
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
    """Every remembered property (id, facts, triggers), streamed, in id order."""
    result = connection.execution_options(stream_results=True, yield_per=batch_size).execute(
        sa.select(
            property_state.c.external_property_id,
            property_state.c.facts,
            property_state.c.triggers,
        ).order_by(property_state.c.external_property_id)
    )
    for row in result.mappings():
        yield dict(row)


def count_properties(connection: sa.Connection) -> int:
    return int(
        connection.execute(sa.select(sa.func.count()).select_from(property_state)).scalar_one()
    )


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
    """Store the event once; None when this edge is already stored (a repeated poll)."""
    exists = connection.execute(
        sa.select(readiness_event.c.id).where(
            readiness_event.c.external_property_id == property_id,
            readiness_event.c.trigger_name == edge.trigger_name,
            readiness_event.c.edge_seq == edge.edge_seq,
        )
    ).scalar()
    if exists is not None:
        return None
    result = connection.execute(
        readiness_event.insert()
        .values(
            external_property_id=property_id,
            trigger_name=edge.trigger_name,
            edge_seq=edge.edge_seq,
            kind=edge.kind,
            fired_at=now,
            facts=dict(facts),
        )
        .returning(readiness_event.c.id)
    )
    return int(result.scalar_one())


def mark_event_decided(connection: sa.Connection, event_id: int, now: datetime) -> None:
    connection.execute(
        readiness_event.update().where(readiness_event.c.id == event_id).values(decided_at=now)
    )


def property_facts(connection: sa.Connection, property_id: str) -> dict[str, Any] | None:
    row = connection.execute(
        sa.select(property_state.c.facts).where(
            property_state.c.external_property_id == property_id
        )
    ).scalar()
    return dict(row) if row is not None else None


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


def count_quarantined(connection: sa.Connection) -> int:
    return int(
        connection.execute(sa.select(sa.func.count()).select_from(source_quarantine)).scalar_one()
    )


# --- checkpoint and source health ------------------------------------------------------------


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
