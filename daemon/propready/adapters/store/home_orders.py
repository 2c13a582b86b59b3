"""Read-only: what the state database holds about one home, for `simulate` (no writes here)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from propready.adapters.store import properties
from propready.adapters.store.schema import orders, readiness_event
from propready.core.simulation import ExistingOrder
from propready.core.triggers import TriggerMemory


def orders_of_homes(
    connection: sa.Connection, property_ids: Sequence[str]
) -> dict[str, list[ExistingOrder]]:
    """The orders of several homes in one query: {id: orders newest first}."""
    if not property_ids:
        return {}
    rows = connection.execute(
        sa.select(
            orders.c.external_property_id,
            orders.c.external_order_id,
            orders.c.state,
            orders.c.created_at,
            orders.c.window_end,
            readiness_event.c.trigger_name,
            readiness_event.c.edge_seq,
        )
        .select_from(orders.outerjoin(readiness_event, orders.c.event_id == readiness_event.c.id))
        .where(orders.c.external_property_id.in_(list(property_ids)))
        .order_by(orders.c.created_at.desc(), orders.c.id.desc())
    )
    found: dict[str, list[ExistingOrder]] = {}
    for property_id, *fields in rows:
        found.setdefault(property_id, []).append(ExistingOrder(*fields))
    return found


def trigger_memories(
    connection: sa.Connection, property_ids: Sequence[str]
) -> dict[str, dict[str, TriggerMemory]]:
    """The trigger memory of each home the poller has seen (an unseen home is absent)."""
    stored = properties.load_properties(connection, list(property_ids), with_facts=False)
    return {property_id: remembered.triggers for property_id, remembered in stored.items()}
