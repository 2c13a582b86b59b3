"""sending pause: the vendor refused the API key (or an operator paused sending)

- sending_pause: at most one row per vendor (name = "planomatic"). While it exists, no host
  sends orders with the refused key (key_fingerprint, a truncated SHA-256 of the key, never the
  key itself); a configuration with another key may try one order, and success removes the row.

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sending_pause",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("paused_at", TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=True),
        sa.Column("paused_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_sending_pause"),
    )


def downgrade() -> None:
    op.drop_table("sending_pause")
