"""webhook deliveries: what `propready serve` received, stored once each before the 2xx

- webhook_delivery: one row per distinct delivery (dedupe_hash = SHA-256 of the canonical JSON
  of the masked body, unique), its state (pending, applied, unmatched, malformed), the parsed
  fields the applier sorts and matches on (vendor order id, external ids, event, event time,
  status and its rank), the masked body (or the masked text of a body that is not JSON) and
  applied_at (NULL until applied; `propready webhooks replay` clears it again).

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_delivery",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("dedupe_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("vendor_order_id", sa.String(64), nullable=True),
        sa.Column("vendor_request_id", sa.String(64), nullable=True),
        sa.Column("external_order_id", sa.String(255), nullable=True),
        sa.Column("external_property_id", sa.String(255), nullable=True),
        sa.Column("event", sa.String(100), nullable=True),
        sa.Column("event_at", TS, nullable=True),
        sa.Column("order_status", sa.String(64), nullable=True),
        sa.Column("status_rank", sa.Integer(), nullable=True),
        sa.Column("body", JSON, nullable=True),
        sa.Column("raw_text", sa.Text(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("applied_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_delivery"),
        sa.UniqueConstraint("dedupe_hash", name="uq_webhook_delivery_dedupe_hash"),
    )
    op.create_index(
        "ix_webhook_delivery_state_applied_at", "webhook_delivery", ["state", "applied_at"]
    )
    op.create_index(
        "ix_webhook_delivery_vendor_order_id_event_at",
        "webhook_delivery",
        ["vendor_order_id", "event_at"],
    )
    op.create_index(
        "ix_webhook_delivery_external_order_id", "webhook_delivery", ["external_order_id"]
    )
    op.create_index("ix_webhook_delivery_received_at", "webhook_delivery", ["received_at"])


def downgrade() -> None:
    op.drop_table("webhook_delivery")
