"""a partial index of the placed orders still open at the vendor

The attention list (the console's start page, `propready attention`, the notifier) looks for
stuck orders: placed, not in a final vendor status, with no progress for a while. Most placed
orders of a mature portfolio are completed, so without this index that check scans the whole
orders table on every start page; with it, it reads only the open ones. The predicate is
written with constants (core/orders.py OPEN_AT_VENDOR_SQL, frozen here), as the queries that use
it are.

A new index only: old and new versions can run against this schema during a rolling upgrade.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

OPEN_AT_VENDOR = (
    "state = 'placed' AND (vendor_status IS NULL OR vendor_status NOT IN "
    "('canceled', 'cancelled', 'completed', 'submitted_cancel_onsite'))"
)


def upgrade() -> None:
    op.create_index(
        "ix_orders_open_at_vendor",
        "orders",
        ["id"],
        postgresql_where=sa.text(OPEN_AT_VENDOR),
        sqlite_where=sa.text(OPEN_AT_VENDOR),
    )


def downgrade() -> None:
    op.drop_index("ix_orders_open_at_vendor", table_name="orders")
