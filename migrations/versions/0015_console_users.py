"""the web console: its users, its signing keys, and indexes for its paginated lists

- console_user: people who may log in to the console (`propready users add`), with a role
  (viewer, approver, admin), an argon2id password hash (NULL for users authenticated by a
  reverse proxy), a disabled flag, and a session epoch that a password change, a role change or
  disabling raises (signed session cookies carry it, so older sessions stop working).
- orders (state, id) and (billing_entity_slug, id): the console lists orders newest first by id,
  filtered by state or billing entity, one page at a time (keyset pagination).
- orders (delivered_at, id) and (billing_entity_slug, delivered_at, id): the deliveries page
  lists delivered orders newest delivery first, optionally of one billing entity.
- audit_log (external_order_id): an order's story (the console's order page, `audit --order`)
  without a scan of the audit log. On a large PostgreSQL audit log this index takes a while to
  build during the upgrade (about a minute per 10 million rows).
- console_secret: signing keys generated once when not configured (the console's session
  key), shared by every `serve` process.

New tables and indexes only: old and new versions can run against this schema during a rolling
upgrade.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_user",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_console_user"),
        sa.UniqueConstraint("name", name="uq_console_user_name"),
        sa.CheckConstraint(
            "role IN ('viewer', 'approver', 'admin')", name="ck_console_user_role_known"
        ),
    )
    op.create_table(
        "console_secret",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_console_secret"),
    )
    op.create_index("ix_orders_state_id", "orders", ["state", "id"])
    op.create_index("ix_orders_billing_entity_slug_id", "orders", ["billing_entity_slug", "id"])
    op.create_index("ix_audit_log_external_order_id", "audit_log", ["external_order_id"])
    op.create_index("ix_orders_delivered_at_id", "orders", ["delivered_at", "id"])
    op.create_index(
        "ix_orders_billing_entity_slug_delivered_at_id",
        "orders",
        ["billing_entity_slug", "delivered_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_orders_billing_entity_slug_delivered_at_id", table_name="orders")
    op.drop_index("ix_orders_delivered_at_id", table_name="orders")
    op.drop_index("ix_audit_log_external_order_id", table_name="audit_log")
    op.drop_index("ix_orders_billing_entity_slug_id", table_name="orders")
    op.drop_index("ix_orders_state_id", table_name="orders")
    op.drop_table("console_secret")
    op.drop_table("console_user")
