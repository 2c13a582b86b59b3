"""Recovery: finish what a crash left half-done, at start-up and on every cycle.

An order found in `sending` whose sender is gone (lease expired, or the owning process on this
host no longer exists) may or may not have reached PlanOmatic. It is treated exactly like an
ambiguous answer: re-sent while the vendor's duplicate protection covers it, else `unknown`.
Planned orders need no recovery: the sender picks them up; placed ones are in status sync's hands.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from propready.adapters.store import outbox
from propready.service.components import Components, CycleSummary
from propready.service.send import handle_ambiguous


def recover(components: Components, now: datetime, summary: CycleSummary) -> None:
    """Drive every abandoned `sending` order to a state that the sender or an operator resolves."""
    with components.state.begin() as connection:
        instance = components.owner.rpartition(":")[0]
        dead = dead_local_owners(outbox.sending_lease_owners(connection), instance)
        stale = outbox.expired_leases(connection, now, dead)
    lease = components.settings.daemon.lease_seconds
    for order in stale:
        previous = str(order.lease_owner)
        # Take the lease over first: when several hosts recover at once, exactly one settles it.
        with components.state.begin() as connection:
            if not outbox.take_over(connection, order.id, previous, components.owner, now, lease):
                continue
        summary.recovered += 1
        reason = (
            f"sender {previous} stopped while sending"
            if previous in dead
            else f"sender {previous} did not finish before its lease expired"
        )
        taken = replace(order, lease_owner=components.owner)
        handle_ambiguous(components, taken, reason, now, summary, resend_at_once=True)


def dead_local_owners(owners: Iterable[str], instance: str) -> list[str]:
    """Lease owners (`instance:pid`) of this host's instance whose process has exited.

    Lets a restarted daemon take over at once instead of waiting out the lease. Owners on other
    hosts cannot be checked from here: their leases simply expire.
    """
    dead = []
    for owner in owners:
        host, _, pid_text = owner.rpartition(":")
        if host != instance or not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        if not _process_exists(int(pid_text)):
            dead.append(owner)
    return dead


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
