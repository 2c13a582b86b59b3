"""Property and trigger memory, and readiness events: what the poller remembers between cycles."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import property_state, readiness_event, trigger_state
from propready.core.model import Edge
from propready.core.triggers import TriggerMemory, TriggerUpdate


def load_trigger_memory(
    connection: sa.Connection, property_ids: list[str]
) -> dict[str, dict[str, TriggerMemory]]:
    """Trigger memory for a batch of properties; a property absent from the result is unseen."""
    memory: dict[str, dict[str, TriggerMemory]] = {}
    if not property_ids:
        return memory
    seen = connection.execute(
        sa.select(property_state.c.external_property_id).where(
            property_state.c.external_property_id.in_(property_ids)
        )
    ).scalars()
    for property_id in seen:
        memory[property_id] = {}
    rows = connection.execute(
        sa.select(trigger_state).where(trigger_state.c.external_property_id.in_(property_ids))
    ).mappings()
    for row in rows:
        memory.setdefault(row["external_property_id"], {})[row["trigger_name"]] = TriggerMemory(
            row["is_true"], row["edge_count"]
        )
    return memory


def load_row_hashes(connection: sa.Connection, property_ids: list[str]) -> dict[str, str]:
    rows = connection.execute(
        sa.select(property_state.c.external_property_id, property_state.c.row_hash).where(
            property_state.c.external_property_id.in_(property_ids)
        )
    )
    return {str(property_id): str(row_hash) for property_id, row_hash in rows}


def save_property(
    connection: sa.Connection,
    property_id: str,
    row_hash: str,
    facts: Mapping[str, Any],
    now: datetime,
    *,
    is_new: bool,
    changed: bool,
) -> None:
    if is_new:
        connection.execute(
            property_state.insert().values(
                external_property_id=property_id,
                row_hash=row_hash,
                facts=dict(facts),
                first_seen_at=now,
                last_seen_at=now,
                last_changed_at=now,
            )
        )
        return
    values: dict[str, Any] = {"last_seen_at": now}
    if changed:
        values.update(row_hash=row_hash, facts=dict(facts), last_changed_at=now)
    connection.execute(
        property_state.update()
        .where(property_state.c.external_property_id == property_id)
        .values(**values)
    )


def save_trigger_updates(
    connection: sa.Connection,
    property_id: str,
    updates: list[TriggerUpdate],
    existing: Mapping[str, TriggerMemory],
    now: datetime,
) -> None:
    for update in updates:
        values = {
            "is_true": update.memory.is_true,
            "edge_count": update.memory.edge_count,
            "changed_at": now,
        }
        if update.trigger_name in existing:
            connection.execute(
                trigger_state.update()
                .where(
                    trigger_state.c.external_property_id == property_id,
                    trigger_state.c.trigger_name == update.trigger_name,
                )
                .values(**values)
            )
        else:
            connection.execute(
                trigger_state.insert().values(
                    external_property_id=property_id, trigger_name=update.trigger_name, **values
                )
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
