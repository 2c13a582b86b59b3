"""readiness events stay open when no order came of them for a reason a person can fix

- readiness_event.state: ordered (an order exists for it), open (not plannable, refused by the
  vendor for an operator-fixable reason, canceled before sending, resolved as never placed, or
  given up: planned again when the home's row, the rules or the configuration change), dry_run
  (decided in dry run: `backfill` offers it once live), closed (decided for good: no rule
  matched, a duplicate window, a budget skip). Events stored before this revision are closed.
- plan_attempts: orders created for the event so far (a re-plan's external_order_id differs).
- plan_basis: what the last plan was made from (row fingerprint, rules version, configuration
  fingerprint): an open event is planned again only when it changes.
- open_reason: why the event is open, for people.

Columns are added in place (no table copy on SQLite: orders refers to readiness_event).

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "readiness_event",
        sa.Column("state", sa.String(16), nullable=False, server_default="closed"),
    )
    op.add_column(
        "readiness_event",
        sa.Column("plan_attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("readiness_event", sa.Column("plan_basis", sa.String(200), nullable=True))
    op.add_column("readiness_event", sa.Column("open_reason", sa.Text(), nullable=True))
    op.create_index("ix_readiness_event_state", "readiness_event", ["state"])


def downgrade() -> None:
    op.drop_index("ix_readiness_event_state", table_name="readiness_event")
    with op.batch_alter_table("readiness_event") as batch:
        batch.drop_column("open_reason")
        batch.drop_column("plan_basis")
        batch.drop_column("plan_attempts")
        batch.drop_column("state")
