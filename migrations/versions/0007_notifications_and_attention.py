"""People: the notification facts, groups and outbox, the digest tick, attention silences.

- notify_cursor: where the notification scanner stands in the audit log. Created here at the
  audit log's current end, so an existing installation is not told its whole history.
- notify_fact: one row per (kind, subject, occurrence) worth telling a person.
- notify_group: per channel fingerprint and kind, the facts already batched and the last message.
- notify_message: the notification outbox, one row per (channel, batch).
- notify_tick: once-a-day work (the digest), one row per local day.
- attention_silence: acknowledged or snoozed attention items.

New tables only: old and new versions can run against this schema during a rolling upgrade.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notify_cursor",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_audit_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("scanned_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_notify_cursor"),
    )
    op.execute(
        "INSERT INTO notify_cursor (name, last_audit_id) "
        "SELECT 'audit', coalesce(max(id), 0) FROM audit_log"
    )
    op.create_table(
        "notify_fact",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("occurrence", sa.String(100), nullable=False),
        sa.Column("happened_at", TS, nullable=False),
        sa.Column("noted_at", TS, nullable=False),
        sa.Column("external_property_id", sa.String(255), nullable=True),
        sa.Column("external_order_id", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("suppressed_by", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notify_fact"),
        sa.UniqueConstraint(
            "kind", "subject", "occurrence", name="uq_notify_fact_kind_subject_occurrence"
        ),
    )
    op.create_index("ix_notify_fact_kind_id", "notify_fact", ["kind", "id"])
    op.create_index("ix_notify_fact_noted_at", "notify_fact", ["noted_at"])
    op.create_table(
        "notify_group",
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("last_fact_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_message_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("channel", "kind", name="pk_notify_group"),
    )
    op.create_table(
        "notify_message",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("fact_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("first_failed_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notify_message"),
        sa.UniqueConstraint("batch_id", name="uq_notify_message_batch_id"),
    )
    op.create_index(
        "ix_notify_message_state_next_attempt_at", "notify_message", ["state", "next_attempt_at"]
    )
    op.create_index("ix_notify_message_created_at", "notify_message", ["created_at"])
    op.create_table(
        "notify_tick",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("local_day", sa.String(10), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", "local_day", name="pk_notify_tick"),
    )
    op.create_table(
        "attention_silence",
        sa.Column("item", sa.String(400), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("silenced_until", TS, nullable=True),
        sa.Column("item_version", sa.String(400), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("silenced_by", sa.String(255), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("item", name="pk_attention_silence"),
    )


def downgrade() -> None:
    op.drop_table("attention_silence")
    op.drop_table("notify_tick")
    op.drop_index("ix_notify_message_created_at", table_name="notify_message")
    op.drop_index("ix_notify_message_state_next_attempt_at", table_name="notify_message")
    op.drop_table("notify_message")
    op.drop_table("notify_group")
    op.drop_index("ix_notify_fact_noted_at", table_name="notify_fact")
    op.drop_index("ix_notify_fact_kind_id", table_name="notify_fact")
    op.drop_table("notify_fact")
    op.drop_table("notify_cursor")
