"""The vendor's price for an order: stored and audited when a retrieve or a webhook reports it.

For the order lifecycle (status sync, webhook application): call `apply_vendor_price` inside the
transaction that applies the vendor's news, with the price read by
`core.pricing.vendor_price_from_order`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from propready.adapters.store import audit
from propready.adapters.store.budgets import record_vendor_price
from propready.core.audit_kinds import AuditKind
from propready.core.orders import Order
from propready.service.send import order_refs


def apply_vendor_price(
    connection: sa.Connection, order: Order, cents: int | None, now: datetime
) -> bool:
    """Record the vendor's price (cents) for `order`; audit it when it changed. None: no price."""
    if cents is None or not record_vendor_price(connection, order.id, cents, now):
        return False
    audit.record(
        connection,
        AuditKind.ORDER_PRICE_REPORTED,
        now,
        **order_refs(order),
        detail={
            "vendor_price_cents": cents,
            "previous_vendor_price_cents": order.vendor_price_cents,
            "estimated_price_cents": order.estimated_price_cents,
        },
    )
    return True
