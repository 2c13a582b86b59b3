"""orders: race-free duplicate window, ambiguity and status-sync columns, the shared send schedule

- PostgreSQL: an exclusion constraint (btree_gist) so that no two window-holding orders of one
  property have overlapping [created_at, window_end) ranges, whatever the isolation level or the
  number of racing processes (reliability.md: 1 row, 19 rejected with SQLSTATE 23P01).
- SQLite: a BEFORE INSERT trigger with the same rule, as a backstop behind BEGIN IMMEDIATE.
- Orders that free the window (rejected, failed, canceled) are outside both: the constraint's
  WHERE clause and the trigger skip them, and the code also sets their window_end to the time
  they left it. The state list matches propready.core.orders.FREES_WINDOW (a test checks).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# Written out, not imported: this revision must stay what it was when the code moves on.
FREES_WINDOW_SQL = "('rejected', 'failed', 'canceled')"


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("ambiguous_at", TS, nullable=True))
        batch.add_column(sa.Column("status_checked_at", TS, nullable=True))
    op.create_table(
        "send_pacing",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("next_free_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_send_pacing"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE orders ADD CONSTRAINT ex_orders_duplicate_window EXCLUDE USING gist ("
            " external_property_id WITH =,"
            " tstzrange(created_at, window_end, '[)') WITH &&"
            f") WHERE (state NOT IN {FREES_WINDOW_SQL})"
        )
    else:
        # Same rule as the constraint: [created_at, window_end) ranges of window-holding orders
        # of one property must not overlap; an empty range (window_end = created_at) never does.
        op.execute(
            "CREATE TRIGGER orders_duplicate_window BEFORE INSERT ON orders"
            f" WHEN NEW.state NOT IN {FREES_WINDOW_SQL} AND NEW.created_at < NEW.window_end"
            " BEGIN SELECT RAISE(ABORT, 'duplicate window: an open order exists for this"
            " property') WHERE EXISTS (SELECT 1 FROM orders o"
            " WHERE o.external_property_id = NEW.external_property_id"
            f" AND o.state NOT IN {FREES_WINDOW_SQL} AND o.created_at < o.window_end"
            " AND o.created_at < NEW.window_end AND o.window_end > NEW.created_at); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE orders DROP CONSTRAINT IF EXISTS ex_orders_duplicate_window")
    else:
        op.execute("DROP TRIGGER IF EXISTS orders_duplicate_window")
    op.drop_table("send_pacing")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("status_checked_at")
        batch.drop_column("ambiguous_at")
