"""The vendor's order statuses in lifecycle order, and which of two pieces of news is newer.

PlanOmatic delivers webhooks in order, retries them, and may repeat one; retrieve answers arrive
whenever we ask. So news about one order can reach us late, twice, or behind something newer,
and "the last one to arrive wins" would let an old `scheduled` undo a `post_processing`
(design.md 8.5). The rules here:

1. A status never moves back along the lifecycle:
   `new_request < ordered < scheduling < scheduled < on_site < post_processing < notified <
   completed` (synonyms from planomatic-api.md 2.1 share a rank: `committed` is `scheduled`,
   `assembly` is `post_processing`, ...).
2. `canceled` (also `cancelled`, `submitted_cancel_onsite`) is an end state: it wins over every
   other status, and nothing comes after it.
3. An appointment that could not be completed may be rescheduled: the order may move back, but
   only into the vendor's reschedule statuses (`pending_reschedule`, `unscheduled`), and only
   before delivery (`notified`/`completed` are not reopened). From a reschedule status it moves
   on as usual (`scheduling`, `scheduled`, ...).
4. When both pieces of news carry an event time, the earlier one is never newer, and a later
   one is newer when rules 1 to 3 allow the move, or when it may follow a reschedule whose own
   delivery has not arrived yet: a later `scheduled` after `on_site` (the appointment failed
   and was rebooked meanwhile) is newer; a later `ordered` after `scheduled` is not, and
   nothing reopens a delivered order. The same status with a later time is newer (a rebooked
   appointment). Without both times the rank alone decides, so the same status is not newer.
   Arrival order is never used here (the applier uses it only to break exact ties).
5. Statuses without a place in the lifecycle (`hold`, anything the vendor adds later) cannot be
   ranked: such news is newer only with a later event time, or over no status at all; a ranked
   status after an unranked one is newer (leaving a hold is progress).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Ranks leave gaps so that a status found later can be slotted in without renumbering stored rows.
STATUS_RANKS: dict[str, int] = {
    "submitted": 10,
    "new_request": 10,
    "ordered": 20,
    "order_processing": 20,
    # Reschedule statuses sit just before scheduling: an order there is waiting for a new booking.
    "pending_reschedule": 25,
    "unscheduled": 25,
    "scheduling": 30,
    "pending_appointment": 30,
    "ready_to_schedule": 30,
    "scheduled": 40,
    "committed": 40,
    "on_site": 50,
    "post_processing": 60,
    "assembly": 60,
    "notified": 70,  # QA passed and the client told: delivered
    "completed": 80,  # delivered and billed
    "canceled": 1000,
    "cancelled": 1000,
    "submitted_cancel_onsite": 1000,
}
CANCELED_STATUSES = frozenset({"canceled", "cancelled", "submitted_cancel_onsite"})
RESCHEDULE_STATUSES = frozenset({"pending_reschedule", "unscheduled"})
DELIVERED_STATUSES = frozenset({"notified", "completed"})
DELIVERED_RANK = STATUS_RANKS["notified"]
RESCHEDULE_RANK = STATUS_RANKS["pending_reschedule"]

# The status an event implies when the payload carries no `order_status` (planomatic-api.md 2.2).
# Events that say nothing about the order's stage (`order.submitted`?) are left out on purpose.
EVENT_STATUSES: dict[str, str] = {
    "order.received": "new_request",
    "order.processed": "ordered",
    "appointment.awaiting_scheduling": "scheduling",
    "appointment.awaiting_availability": "pending_appointment",
    "appointment.window_selected": "scheduling",
    "appointment.scheduled": "scheduled",
    "appointment.awaiting_reschedule": "pending_reschedule",
    "appointment.unable_to_complete": "pending_reschedule",
    "order.post_processing": "post_processing",
    "order.delivered": "completed",
    "order.canceled": "canceled",
    "order.cancelled": "canceled",
}


def normalise_status(status: str | None) -> str | None:
    """`" Scheduled "` -> `"scheduled"`; None or blank -> None."""
    if status is None:
        return None
    cleaned = status.strip().lower().replace(" ", "_").replace("-", "_")
    return cleaned or None


def status_rank(status: str | None) -> int | None:
    """The status's place in the lifecycle (higher is later), or None when it has none."""
    normalised = normalise_status(status)
    return STATUS_RANKS.get(normalised) if normalised is not None else None


def effective_status(order_status: str | None, event: str | None) -> str | None:
    """The status news stands for: its `order_status`, else the one its event implies."""
    status = normalise_status(order_status)
    if status is not None:
        return status
    return EVENT_STATUSES.get(event.strip().lower()) if event else None


def is_canceled(status: str | None) -> bool:
    return normalise_status(status) in CANCELED_STATUSES


def is_delivered(status: str | None) -> bool:
    return normalise_status(status) in DELIVERED_STATUSES


@dataclass(frozen=True)
class StatusPoint:
    """One piece of news about an order's status: the status and, when known, its event time."""

    status: str | None
    event_at: datetime | None = None


def is_newer(current: StatusPoint | None, incoming: StatusPoint) -> bool:
    """Whether `incoming` should replace `current` as the order's status (module docstring)."""
    new = normalise_status(incoming.status)
    if new is None:
        return False
    old = normalise_status(current.status) if current is not None else None
    if current is None or old is None:
        return True
    if old in CANCELED_STATUSES:
        return False
    if new in CANCELED_STATUSES:
        return True
    later = False
    if current.event_at is not None and incoming.event_at is not None:
        if incoming.event_at < current.event_at:
            return False
        later = incoming.event_at > current.event_at
    return _move_allowed(old, new, later=later)


def _move_allowed(old: str, new: str, *, later: bool) -> bool:
    old_rank, new_rank = STATUS_RANKS.get(old), STATUS_RANKS.get(new)
    if new_rank is None:
        return later
    if old_rank is None:
        return True
    if new_rank > old_rank:
        return True
    if new_rank == old_rank:
        return later
    # Backwards: only an unable-to-complete appointment reopens scheduling, never a delivery;
    # with a later event time, the reschedule itself may be the delivery still on its way.
    if old_rank >= DELIVERED_RANK:
        return False
    return new in RESCHEDULE_STATUSES or (later and new_rank >= RESCHEDULE_RANK)
