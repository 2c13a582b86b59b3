"""Triggers at portfolio scale: trigger memory inside property_state, checkpoints, quarantine.

- property_state.triggers (JSON {trigger: [is_true, edge_count]}) replaces the trigger_state
  table: one row read and written per property instead of one per property and trigger.
- property_state.last_seen_at goes: unchanged rows are deliberately not written on each poll.
- source_checkpoint: the incremental cursor, the last full pass and the source's health.
- source_quarantine: rows that could not be typed, so an unchanged bad row is audited once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("property_state") as batch:
        batch.add_column(sa.Column("triggers", JSON, nullable=False, server_default="{}"))
        batch.drop_column("last_seen_at")
    op.drop_table("trigger_state")
    op.create_table(
        "source_checkpoint",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("cursor_value", sa.Text(), nullable=True),
        sa.Column("last_full_pass_at", TS, nullable=True),
        sa.Column("last_poll_at", TS, nullable=True),
        sa.Column("last_success_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_source_checkpoint"),
    )
    op.create_table(
        "source_quarantine",
        sa.Column("row_key", sa.String(300), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("column_name", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("row_key", name="pk_source_quarantine"),
    )


def downgrade() -> None:
    op.drop_table("source_quarantine")
    op.drop_table("source_checkpoint")
    op.create_table(
        "trigger_state",
        sa.Column("external_property_id", sa.String(255), nullable=False),
        sa.Column("trigger_name", sa.String(100), nullable=False),
        sa.Column("is_true", sa.Boolean(), nullable=False),
        sa.Column("edge_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("external_property_id", "trigger_name", name="pk_trigger_state"),
    )
    with op.batch_alter_table("property_state") as batch:
        batch.add_column(sa.Column("last_seen_at", TS, nullable=True))
        batch.drop_column("triggers")
