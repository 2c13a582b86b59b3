"""money: order prices, budget periods, views that count orders and spend

- orders: `estimated_price_cents` (the catalog's estimate at planning), `price_estimated` (it
  rests on example prices or misses a line), `vendor_price_cents` (the vendor's price, which
  replaces the estimate), `budget_day` (the source-time-zone date the order counts in for budgets
  and spend per month; existing orders get the UTC date of their creation) and `held_by_budget`
  (the budget holding the order for approval). Existing orders keep an unknown price (NULL).
- budget_periods: one row per budget scope and period, locked by every order insert that falls
  under a budget (adapters/store/budgets.py).
- Views: `audit_order_lines` (and `audit_orders_by_day`, which reads it) leave canceled orders
  out; `audit_order_spend` lists each placed, non-canceled order with its price;
  `audit_spend_by_entity_month` sums it per billing entity and month. On SQLite the columns are
  added and dropped in place (ALTER TABLE, no table copy: the duplicate-window trigger stays),
  and the replaced views are dropped before and created after.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# Written out, not imported: this revision must stay what it was when the code moves on.
PLACED_NOT_CANCELED = (
    "NOT EXISTS (SELECT 1 FROM orders x WHERE x.id = p.order_id AND x.state = 'canceled')"
)
NEW_VIEWS = ("audit_order_spend", "audit_spend_by_entity_month")


def _lines_sql(postgresql: bool, *, leave_out_canceled: bool) -> str:
    """audit_order_lines: one row per placed order and service (as 0003 made it, or without
    the canceled orders)."""
    if postgresql:
        day = "((p.at) AT TIME ZONE 'UTC')::date"
        entity = "(c.detail ->> 'billing_entity_slug')"
        elements = (
            "JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(c.detail -> 'services')"
            " = 'array' THEN c.detail -> 'services' ELSE '[]'::jsonb END) AS s(value) ON true"
        )
        slug, quantity = "(s.value ->> 'slug')", "(s.value ->> 'quantity')"
    else:
        day = "date(p.at)"
        entity = "json_extract(c.detail, '$.billing_entity_slug')"
        elements = (
            "JOIN json_each(CASE WHEN json_type(c.detail, '$.services') = 'array'"
            " THEN json_extract(c.detail, '$.services') ELSE '[]' END) AS s ON 1"
        )
        slug = "(CASE WHEN s.type = 'object' THEN json_extract(s.value, '$.slug') END)"
        quantity = "(CASE WHEN s.type = 'object' THEN json_extract(s.value, '$.quantity') END)"
    where = "p.kind = 'order_placed'"
    if leave_out_canceled:
        where += f" AND {PLACED_NOT_CANCELED}"
    return f"""
        SELECT p.at AS placed_at, {day} AS day, p.order_id, p.external_order_id,
               p.external_property_id, c.rule_id, {entity} AS billing_entity_slug,
               {slug} AS service_slug, CAST({quantity} AS integer) AS quantity
          FROM audit_log p
          JOIN audit_log c ON c.order_id = p.order_id AND c.kind = 'order_created'
          {elements}
         WHERE {where}"""


ORDERS_BY_DAY = """
    SELECT day, billing_entity_slug, service_slug,
           count(DISTINCT order_id) AS orders, sum(quantity) AS quantity
      FROM audit_order_lines
     GROUP BY day, billing_entity_slug, service_slug"""


def _spend_sql(postgresql: bool) -> dict[str, str]:
    month = (
        "to_char(coalesce(o.budget_day, (o.created_at AT TIME ZONE 'UTC')::date), 'YYYY-MM')"
        if postgresql
        else "strftime('%Y-%m', coalesce(o.budget_day, date(o.created_at)))"
    )
    day = (
        "coalesce(o.budget_day, (o.created_at AT TIME ZONE 'UTC')::date)"
        if postgresql
        else "coalesce(o.budget_day, date(o.created_at))"
    )
    return {
        # One row per placed order that was not canceled: what it cost and where the figure
        # comes from (vendor: reported by PlanOmatic; catalog: the operator's prices; estimate:
        # example prices or a service without a price; unknown: no price recorded).
        "audit_order_spend": f"""
            SELECT o.id AS order_id, o.external_order_id, o.external_property_id,
                   o.billing_entity_slug, o.rule_id, o.created_at,
                   coalesce((SELECT min(a.at) FROM audit_log a
                              WHERE a.order_id = o.id
                                AND a.kind IN ('order_placed', 'order_resolved')),
                            o.created_at) AS placed_at,
                   {day} AS day, {month} AS month, o.vendor_status,
                   o.estimated_price_cents, o.vendor_price_cents,
                   coalesce(o.vendor_price_cents, o.estimated_price_cents, 0) AS spend_cents,
                   CASE WHEN o.vendor_price_cents IS NOT NULL THEN 'vendor'
                        WHEN o.estimated_price_cents IS NULL THEN 'unknown'
                        WHEN o.price_estimated THEN 'estimate'
                        ELSE 'catalog' END AS price_source
              FROM orders o
             WHERE o.state = 'placed'""",
        "audit_spend_by_entity_month": """
            SELECT billing_entity_slug, month, count(*) AS orders, sum(spend_cents) AS spend_cents
              FROM audit_order_spend
             GROUP BY billing_entity_slug, month""",
    }


def _replace_line_views(postgresql: bool, *, leave_out_canceled: bool) -> None:
    op.execute("DROP VIEW IF EXISTS audit_orders_by_day")
    op.execute("DROP VIEW IF EXISTS audit_order_lines")
    lines = _lines_sql(postgresql, leave_out_canceled=leave_out_canceled)
    op.execute(f"CREATE VIEW audit_order_lines AS {lines}")
    op.execute(f"CREATE VIEW audit_orders_by_day AS {ORDERS_BY_DAY}")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    # Plain ADD COLUMN, not a batch: on SQLite a batch would copy the table, which loses the
    # duplicate-window trigger and trips over the views that read orders.
    for column in (
        sa.Column("estimated_price_cents", sa.BigInteger(), nullable=True),
        sa.Column("price_estimated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("vendor_price_cents", sa.BigInteger(), nullable=True),
        sa.Column("budget_day", sa.Date(), nullable=True),
        sa.Column("held_by_budget", sa.String(100), nullable=True),
    ):
        op.add_column("orders", column)
    if postgresql:
        op.execute("UPDATE orders SET budget_day = (created_at AT TIME ZONE 'UTC')::date")
    else:
        op.execute("UPDATE orders SET budget_day = date(created_at)")
    op.create_index(
        "ix_orders_budget_day_billing_entity_slug", "orders", ["budget_day", "billing_entity_slug"]
    )
    op.create_table(
        "budget_periods",
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("period_key", sa.String(32), nullable=False),
        sa.Column("last_locked_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("scope", "period_key", name="pk_budget_periods"),
    )
    _replace_line_views(postgresql, leave_out_canceled=True)
    for name, select in _spend_sql(postgresql).items():
        op.execute(f"CREATE VIEW {name} AS {select}")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in reversed(NEW_VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    _replace_line_views(postgresql, leave_out_canceled=False)
    op.drop_table("budget_periods")
    op.drop_index("ix_orders_budget_day_billing_entity_slug", table_name="orders")
    for column in (
        "held_by_budget",
        "budget_day",
        "vendor_price_cents",
        "price_estimated",
        "estimated_price_cents",
    ):
        # SQLite 3.35+ drops a column in place: no table copy, so the window trigger stays.
        op.execute(f"ALTER TABLE orders DROP COLUMN {column}")
