"""Keeping webhook deliveries: interpret their bytes, store each once, say what happened.

Called by `propready serve` for the deliveries that passed the token and size checks, from a
writer thread (the database calls are synchronous). `store_deliveries` keeps the deliveries
that arrived together in one transaction (group commit: one commit, and on PostgreSQL one WAL
flush, for many deliveries). When it returns, every delivery it reports on is durable and the
receiver may answer 2xx; a delivery reported as an exception was not written, and the receiver
answers 503 so the vendor retries.

If the shared transaction fails, each delivery is tried again in a transaction of its own, so
one body the database refuses fails alone and never takes the others with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from propready.adapters.store import deliveries
from propready.core.webhook_delivery import DeliveryState, IncomingDelivery, interpret
from propready.service.components import crash_point

IntakeOutcome = Literal["stored", "duplicate", "malformed"]


@dataclass(frozen=True)
class IntakeResult:
    outcome: IntakeOutcome  # stored: a new pending row; malformed: a new malformed row
    delivery_id: int | None  # the new row's id; None for a duplicate


def store_delivery(engine: sa.Engine, raw: bytes, now: datetime) -> IntakeResult:
    """Store one delivery unless an identical one is stored already (raises if it fails)."""
    (result,) = store_deliveries(engine, [raw], now)
    if isinstance(result, BaseException):
        raise result
    return result


def store_deliveries(
    engine: sa.Engine, raws: Sequence[bytes], now: datetime
) -> list[IntakeResult | Exception]:
    """Store deliveries in one transaction; per delivery its result, or why it was not stored."""
    incomings = [interpret(raw) for raw in raws]
    try:
        ids = _insert_retrying(engine, incomings, now)
    except sa.exc.SQLAlchemyError as exc:
        if len(incomings) == 1:
            return [exc]
        return [_store_alone(engine, incoming, now) for incoming in incomings]
    crash_point("delivery_after_commit")
    return [_result(incoming, new_id) for incoming, new_id in zip(incomings, ids, strict=True)]


def _store_alone(
    engine: sa.Engine, incoming: IncomingDelivery, now: datetime
) -> IntakeResult | Exception:
    try:
        (new_id,) = _insert_retrying(engine, [incoming], now)
    except sa.exc.SQLAlchemyError as exc:
        return exc
    return _result(incoming, new_id)


def _insert_retrying(
    engine: sa.Engine, incomings: Sequence[IncomingDelivery], now: datetime
) -> list[int | None]:
    try:
        return _insert(engine, incomings, now)
    except sa.exc.DBAPIError as exc:
        # A pooled connection that died with its server (a PostgreSQL restart) is found out by
        # its first statement; the pool is then discarded and one new try succeeds. The serve
        # engine does not ping before every checkout: that round trip costs more than this.
        # Even a retry after a lost COMMIT is safe: the dedupe hash makes it a duplicate.
        if not exc.connection_invalidated:
            raise
        return _insert(engine, incomings, now)


def _insert(
    engine: sa.Engine, incomings: Sequence[IncomingDelivery], now: datetime
) -> list[int | None]:
    with engine.begin() as connection:
        ids = [deliveries.insert_delivery(connection, incoming, now) for incoming in incomings]
        crash_point("delivery_before_commit")
    return ids


def _result(incoming: IncomingDelivery, new_id: int | None) -> IntakeResult:
    if new_id is None:
        return IntakeResult("duplicate", None)
    if incoming.state is DeliveryState.MALFORMED:
        return IntakeResult("malformed", new_id)
    return IntakeResult("stored", new_id)


def intake_for(
    engine: sa.Engine, clock: Callable[[], datetime]
) -> Callable[[Sequence[bytes]], list[IntakeResult | Exception]]:
    """`store_deliveries` bound to a database and a clock, as the receiver's writers call it."""

    def intake(raws: Sequence[bytes]) -> list[IntakeResult | Exception]:
        return store_deliveries(engine, raws, clock())

    return intake


def state_reachable(engine: sa.Engine) -> None:
    """Raise when the state database does not answer (for /healthz)."""
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
