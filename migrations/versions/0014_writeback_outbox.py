"""the write-back outbox: delivered orders written back to the PM system once each

- writeback_outbox: one row per delivered order (order_id unique, a foreign key to orders), the
  statement's named parameters as JSON (no secrets), the state (pending | leased | done |
  failed | given_up), attempts, next_attempt_at, the lease (owner, until), the current failure
  streak's start, the last error (the driver's first line, secrets masked) and timestamps.

A new table only: old and new versions can run against this schema during a rolling upgrade.

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "writeback_outbox",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("order_id", BIG_ID, nullable=False),
        sa.Column("external_order_id", sa.String(255), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("first_failed_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("done_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_writeback_outbox"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_writeback_outbox_order_id_orders"
        ),
        sa.UniqueConstraint("order_id", name="uq_writeback_outbox_order_id"),
    )
    op.create_index(
        "ix_writeback_outbox_state_next_attempt_at",
        "writeback_outbox",
        ["state", "next_attempt_at"],
    )
    op.create_index(
        "ix_writeback_outbox_external_order_id", "writeback_outbox", ["external_order_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_writeback_outbox_external_order_id", table_name="writeback_outbox")
    op.drop_index("ix_writeback_outbox_state_next_attempt_at", table_name="writeback_outbox")
    op.drop_table("writeback_outbox")
