"""Read-only: what the state database holds about one home, for `simulate` (no writes here)."""

from __future__ import annotations

import sqlalchemy as sa

from propready.adapters.store import properties
from propready.adapters.store.schema import orders, readiness_event
from propready.core.simulation import ExistingOrder
from propready.core.triggers import TriggerMemory


def orders_of(connection: sa.Connection, property_id: str) -> list[ExistingOrder]:
    """The home's orders, newest first, with the readiness event each answered."""
    rows = connection.execute(
        sa.select(
            orders.c.external_order_id,
            orders.c.state,
            orders.c.created_at,
            orders.c.window_end,
            readiness_event.c.trigger_name,
            readiness_event.c.edge_seq,
        )
        .select_from(orders.outerjoin(readiness_event, orders.c.event_id == readiness_event.c.id))
        .where(orders.c.external_property_id == property_id)
        .order_by(orders.c.created_at.desc(), orders.c.id.desc())
    )
    return [ExistingOrder(*row) for row in rows]


def trigger_memory(
    connection: sa.Connection, property_id: str
) -> tuple[bool, dict[str, TriggerMemory]]:
    """(seen before, its trigger memory) as the poller left it."""
    stored = properties.load_properties(connection, [property_id], with_facts=False)
    remembered = stored.get(property_id)
    return remembered is not None, (remembered.triggers if remembered is not None else {})
