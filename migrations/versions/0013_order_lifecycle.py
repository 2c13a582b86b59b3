"""order lifecycle: the vendor's news applied to orders, deliverables kept, reconciliation

- orders.vendor_news_at: when news about the order last reached us (a webhook delivery or a
  retrieve answer); reconciliation retrieves only orders with no news for
  `[orders] reconcile_after_hours` (index on state, vendor_news_at).
- orders.vendor_status_at: the vendor's event time of the status we hold, so that an older
  delivery never overwrites a newer status (core/vendor_status.py).
- orders.delivered_at: when the vendor delivered the order (its event time, else when we heard).
- an index on orders.vendor_order_id: every delivery is matched by it.
- order_deliverable: one row per link (kind 'link', name = the link key such as
  photo_manage_link, sequence 0) and per photo (kind 'photo', name 'photo', sequence = the
  photo's sequence), upserted on (order_id, kind, name, sequence).
- view audit_deliveries: per placed (or delivered) order, readiness (trigger, fired_at) -> created -> placed ->
  delivered times and the hours between.

Columns are added in place (no table copy on SQLite: the duplicate-window trigger stays).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def _hours(postgresql: bool, a: str, b: str) -> str:
    if postgresql:
        return f"round(CAST(extract(epoch FROM ({b}) - ({a})) / 3600.0 AS numeric), 2)"
    return f"round((julianday({b}) - julianday({a})) * 24.0, 2)"


def _deliveries_sql(postgresql: bool) -> str:
    # Written out, not imported: this revision must stay what it was when the code moves on.
    placed = """coalesce((SELECT min(a.at) FROM audit_log a
                              WHERE a.order_id = o.id
                                AND a.kind IN ('order_placed', 'order_resolved')),
                            o.created_at)"""
    return f"""
        SELECT order_id, external_order_id, external_property_id, billing_entity_slug, rule_id,
               trigger_name, ready_at, created_at, placed_at, delivered_at, vendor_status,
               {_hours(postgresql, "ready_at", "placed_at")} AS hours_ready_to_placed,
               {_hours(postgresql, "placed_at", "delivered_at")} AS hours_placed_to_delivered,
               {_hours(postgresql, "ready_at", "delivered_at")} AS hours_ready_to_delivered
          FROM (SELECT o.id AS order_id, o.external_order_id, o.external_property_id,
                       o.billing_entity_slug, o.rule_id, e.trigger_name,
                       e.fired_at AS ready_at, o.created_at, {placed} AS placed_at,
                       o.delivered_at, o.vendor_status
                  FROM orders o
                  LEFT JOIN readiness_event e ON e.id = o.event_id
                 WHERE o.state = 'placed' OR o.delivered_at IS NOT NULL) d"""


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for column in (
        sa.Column("vendor_news_at", TS, nullable=True),
        sa.Column("vendor_status_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
    ):
        op.add_column("orders", column)
    op.create_index("ix_orders_state_vendor_news_at", "orders", ["state", "vendor_news_at"])
    op.create_index("ix_orders_vendor_order_id", "orders", ["vendor_order_id"])
    op.create_table(
        "order_deliverable",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("order_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("urls", JSON, nullable=True),
        sa.Column("uploaded_at", TS, nullable=True),
        sa.Column("modified_at", TS, nullable=True),
        sa.Column("stored_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_order_deliverable_order_id_orders"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_order_deliverable"),
        sa.UniqueConstraint(
            "order_id",
            "kind",
            "name",
            "sequence",
            name="uq_order_deliverable_order_id_kind_name_sequence",
        ),
    )
    op.execute(f"CREATE VIEW audit_deliveries AS {_deliveries_sql(postgresql)}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS audit_deliveries")
    op.drop_table("order_deliverable")
    op.drop_index("ix_orders_vendor_order_id", table_name="orders")
    op.drop_index("ix_orders_state_vendor_news_at", table_name="orders")
    for column in ("delivered_at", "vendor_status_at", "vendor_news_at"):
        # SQLite 3.35+ drops a column in place: no table copy, so the window trigger stays.
        op.drop_column("orders", column)
