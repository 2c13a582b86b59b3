"""Initial state schema: property and trigger state, readiness events, the order outbox, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Written out rather than imported from the application, so this revision stays what it was
# when the application's schema moves on.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "property_state",
        sa.Column("external_property_id", sa.String(255), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("facts", JSON, nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("last_changed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("external_property_id", name="pk_property_state"),
    )
    op.create_table(
        "trigger_state",
        sa.Column("external_property_id", sa.String(255), nullable=False),
        sa.Column("trigger_name", sa.String(100), nullable=False),
        sa.Column("is_true", sa.Boolean(), nullable=False),
        sa.Column("edge_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("external_property_id", "trigger_name", name="pk_trigger_state"),
    )
    op.create_table(
        "readiness_event",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("external_property_id", sa.String(255), nullable=False),
        sa.Column("trigger_name", sa.String(100), nullable=False),
        sa.Column("edge_seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("fired_at", TS, nullable=False),
        sa.Column("facts", JSON, nullable=False),
        sa.Column("decided_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_readiness_event"),
        sa.UniqueConstraint(
            "external_property_id",
            "trigger_name",
            "edge_seq",
            name="uq_readiness_event_external_property_id_trigger_name_edge_seq",
        ),
    )
    op.create_table(
        "orders",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("external_order_id", sa.String(255), nullable=False),
        sa.Column("external_property_id", sa.String(255), nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("rule_id", sa.String(100), nullable=True),
        sa.Column("rules_version", sa.String(64), nullable=True),
        sa.Column("billing_entity_slug", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("vendor_status", sa.String(64), nullable=True),
        sa.Column("vendor_order_id", sa.String(64), nullable=True),
        sa.Column("vendor_request_id", sa.String(64), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("window_end", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["readiness_event.id"], name="fk_orders_event_id_readiness_event"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("external_order_id", name="uq_orders_external_order_id"),
    )
    op.create_index(
        "ix_orders_external_property_id_window_end",
        "orders",
        ["external_property_id", "window_end"],
    )
    op.create_index("ix_orders_state_next_attempt_at", "orders", ["state", "next_attempt_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("external_property_id", sa.String(255), nullable=True),
        sa.Column("trigger_name", sa.String(100), nullable=True),
        sa.Column("rule_id", sa.String(100), nullable=True),
        sa.Column("rules_version", sa.String(64), nullable=True),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("order_id", BIG_ID, nullable=True),
        sa.Column("external_order_id", sa.String(255), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index(
        "ix_audit_log_external_property_id_id", "audit_log", ["external_property_id", "id"]
    )
    op.create_index("ix_audit_log_kind_at", "audit_log", ["kind", "at"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("orders")
    op.drop_table("readiness_event")
    op.drop_table("trigger_state")
    op.drop_table("property_state")
