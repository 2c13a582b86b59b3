"""Keeping one webhook delivery: interpret its bytes, store it once, say what happened.

Called by `propready serve` for every delivery that passed the token and size checks, in a
worker thread (the database calls are synchronous). The insert and its commit are one
transaction: when this returns, the delivery is durable and the receiver may answer 2xx; when
it raises, nothing was written and the receiver answers 503 so the vendor retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from propready.adapters.store import deliveries
from propready.core.webhook_delivery import DeliveryState, interpret
from propready.service.components import crash_point

IntakeOutcome = Literal["stored", "duplicate", "malformed"]


@dataclass(frozen=True)
class IntakeResult:
    outcome: IntakeOutcome  # stored: a new pending row; malformed: a new malformed row
    delivery_id: int | None  # the new row's id; None for a duplicate


def store_delivery(engine: sa.Engine, raw: bytes, now: datetime) -> IntakeResult:
    """Store the delivery unless an identical one is stored already (raises if storing fails)."""
    incoming = interpret(raw)
    with engine.begin() as connection:
        new_id = deliveries.insert_delivery(connection, incoming, now)
        crash_point("delivery_before_commit")
    crash_point("delivery_after_commit")
    if new_id is None:
        return IntakeResult("duplicate", None)
    if incoming.state is DeliveryState.MALFORMED:
        return IntakeResult("malformed", new_id)
    return IntakeResult("stored", new_id)


def intake_for(engine: sa.Engine, clock: Callable[[], datetime]) -> Callable[[bytes], IntakeResult]:
    """`store_delivery` bound to a database and a clock, as the receiver calls it."""

    def intake(raw: bytes) -> IntakeResult:
        return store_delivery(engine, raw, clock())

    return intake


def state_reachable(engine: sa.Engine) -> None:
    """Raise when the state database does not answer (for /healthz)."""
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
