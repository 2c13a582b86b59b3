"""The order outbox's states and what each vendor outcome moves an order to (pure)."""

from __future__ import annotations

from enum import StrEnum


class OrderState(StrEnum):
    PLANNED = "planned"  # written with its decision; not yet sent
    AWAITING_APPROVAL = "awaiting_approval"  # mode approval: waits for `orders approve`
    SENDING = "sending"  # leased by one sender; the POST may be in flight
    PLACED = "placed"  # the vendor accepted it (vendor_status tracks its life there)
    REJECTED = "rejected"  # HTTP 400: final
    FAILED = "failed"  # gave up after retrying what provably never reached the vendor
    UNKNOWN = "unknown"  # ambiguous outcome: may exist at the vendor; an operator decides
    CANCELED = "canceled"


# States whose order still holds the duplicate window. Rejected, failed (never reached the
# vendor) and canceled orders free it: no vendor order exists for them.
HOLDS_WINDOW = frozenset(
    {
        OrderState.PLANNED,
        OrderState.AWAITING_APPROVAL,
        OrderState.SENDING,
        OrderState.PLACED,
        OrderState.UNKNOWN,
    }
)
FINAL = frozenset({OrderState.REJECTED, OrderState.FAILED, OrderState.CANCELED})
