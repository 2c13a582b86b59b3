"""Recovery: finish what a crash left half-done, at start-up and on every cycle."""

from __future__ import annotations

from datetime import datetime

from propready.adapters.store import outbox
from propready.core.orders import OrderState
from propready.service.components import Components, CycleSummary
from propready.service.send import finish


def recover(components: Components, now: datetime, summary: CycleSummary) -> None:
    """Orders a dead sender left in `sending`: the POST may have happened, so they become unknown.

    Never re-sent blindly (reliability.md): an operator or a later status check resolves them.
    """
    with components.state.begin() as connection:
        stale = outbox.expired_leases(connection, now)
    for order in stale:
        summary.recovered += 1
        summary.unknown += 1
        finish(
            components,
            order,
            OrderState.UNKNOWN,
            now,
            "order_outcome_unknown",
            {"reason": f"sender {order['lease_owner']} stopped while sending; lease expired"},
        )
