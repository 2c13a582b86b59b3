"""The state database schema as SQLAlchemy Core tables: what the code expects.

`migrations/` must produce exactly this schema on SQLite and PostgreSQL; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from propready.core.orders import OPEN_AT_VENDOR_SQL

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) too."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the state database; pass aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if parsed.tzinfo is None:  # SQLite keeps no zone; everything stored is UTC
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)


# JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# BIGINT keys on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

PROPERTY_ID = sa.String(255)  # PlanOmatic's limit for external_property_id

property_state = sa.Table(
    "property_state",
    metadata,
    sa.Column("external_property_id", PROPERTY_ID, primary_key=True),
    # A fingerprint of the raw source row: an unchanged row is recognised without typing it.
    sa.Column("row_hash", sa.String(64), nullable=False),
    # The facts `previous` can read in CEL (those the rules mention), without secrets.
    sa.Column("facts", Json, nullable=False),
    # Trigger memory: {trigger name: [is_true, edge_count]}.
    sa.Column("triggers", Json, nullable=False, server_default="{}"),
    sa.Column("first_seen_at", UtcDateTime, nullable=False),
    sa.Column("last_changed_at", UtcDateTime, nullable=False),
)

source_checkpoint = sa.Table(
    "source_checkpoint",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("cursor_value", sa.Text(), nullable=True),  # JSON-encoded cursor value
    sa.Column("last_full_pass_at", UtcDateTime, nullable=True),
    sa.Column("last_poll_at", UtcDateTime, nullable=True),
    sa.Column("last_success_at", UtcDateTime, nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
)

source_quarantine = sa.Table(
    "source_quarantine",
    metadata,
    # The property id, or "#" + the row hash for a row without one.
    sa.Column("row_key", sa.String(300), primary_key=True),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Column("column_name", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("first_seen_at", UtcDateTime, nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
)

readiness_event = sa.Table(
    "readiness_event",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("external_property_id", PROPERTY_ID, nullable=False),
    sa.Column("trigger_name", sa.String(100), nullable=False),
    # The n-th rising edge of this trigger for this property: a repeated or overlapping poll
    # computes the same n, so the unique key stores each edge once.
    sa.Column("edge_seq", sa.Integer(), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # rising_edge | first_sight | backfill
    sa.Column("fired_at", UtcDateTime, nullable=False),
    sa.Column("facts", Json, nullable=False),
    sa.Column("decided_at", UtcDateTime, nullable=True),
    # ordered | open | dry_run | closed (core/model.py EventState; migration 0012)
    sa.Column("state", sa.String(16), nullable=False, server_default="closed"),
    sa.Column("plan_attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("plan_basis", sa.String(200), nullable=True),
    sa.Column("open_reason", sa.Text(), nullable=True),
    sa.UniqueConstraint("external_property_id", "trigger_name", "edge_seq"),
    sa.Index(None, "state"),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("external_order_id", sa.String(255), nullable=False, unique=True),
    sa.Column("external_property_id", PROPERTY_ID, nullable=False),
    sa.Column("event_id", BigId, sa.ForeignKey("readiness_event.id"), nullable=True),
    sa.Column("rule_id", sa.String(100), nullable=True),
    sa.Column("rules_version", sa.String(64), nullable=True),
    sa.Column("billing_entity_slug", sa.String(255), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("vendor_status", sa.String(64), nullable=True),
    sa.Column("vendor_order_id", sa.String(64), nullable=True),
    sa.Column("vendor_request_id", sa.String(64), nullable=True),
    # The create request body without the api_key. It holds the access code because the outbox
    # must be able to (re)send after a crash; it never goes to logs, the audit log or the CLI.
    sa.Column("payload", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("window_end", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=True),
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("lease_until", UtcDateTime, nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    # Set when an attempt's outcome was ambiguous: a later `duplicate` answer from the vendor then
    # means "the earlier attempt was saved", not a rejection.
    sa.Column("ambiguous_at", UtcDateTime, nullable=True),
    sa.Column("status_checked_at", UtcDateTime, nullable=True),
    # Money (migration 0008): the catalog's estimate at planning (cents; price_estimated when it
    # rests on example prices or misses a line), the vendor's reported price once known (it
    # replaces the estimate in every figure), the local date (source time zone) the order counts
    # in for budgets and spend per month, and the budget holding it for approval, if any.
    sa.Column("estimated_price_cents", sa.BigInteger(), nullable=True),
    sa.Column("price_estimated", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("vendor_price_cents", sa.BigInteger(), nullable=True),
    sa.Column("budget_day", sa.Date(), nullable=True),
    sa.Column("held_by_budget", sa.String(100), nullable=True),
    # The order lifecycle (migration 0013): when news about the order last reached us (webhook
    # or retrieve; reconciliation retrieves orders without news for reconcile_after_hours), the
    # vendor's event time of the status held (an older delivery never overwrites it), and when
    # the vendor delivered it.
    sa.Column("vendor_news_at", UtcDateTime, nullable=True),
    sa.Column("vendor_status_at", UtcDateTime, nullable=True),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
    sa.Index(None, "external_property_id", "window_end"),
    sa.Index(None, "state", "next_attempt_at"),
    sa.Index(None, "budget_day", "billing_entity_slug"),
    sa.Index(None, "state", "vendor_news_at"),  # migration 0013: reconciliation
    sa.Index(None, "vendor_order_id"),  # migration 0013: deliveries are matched by it
    # the console's order lists: newest first by id, filtered (migration 0015)
    sa.Index(None, "state", "id"),
    sa.Index(None, "billing_entity_slug", "id"),
    # the console's deliveries page: newest delivery first, by entity (migration 0015)
    sa.Index(None, "delivered_at", "id"),
    sa.Index(None, "billing_entity_slug", "delivered_at", "id"),
    # placed orders still open at the vendor, for the stuck-order check (migration 0016)
    sa.Index(
        "ix_orders_open_at_vendor",
        "id",
        postgresql_where=sa.text(OPEN_AT_VENDOR_SQL),
        sqlite_where=sa.text(OPEN_AT_VENDOR_SQL),
    ),
    # Not declared here because alembic cannot compare them: on PostgreSQL the exclusion
    # constraint ex_orders_duplicate_window (btree_gist), on SQLite the trigger
    # orders_duplicate_window; both created by migration 0002.
)

# What the vendor delivered for an order (migration 0013): links (kind 'link', name = the link
# key such as photo_manage_link or zillow_3d_link, sequence 0) and photos (kind 'photo', name
# 'photo', sequence = the photo's sequence); upserted by the apply step
# (adapters/store/deliverables.py).
order_deliverable = sa.Table(
    "order_deliverable",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("order_id", BigId, sa.ForeignKey("orders.id"), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # link | photo
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("sequence", sa.Integer(), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("caption", sa.Text(), nullable=True),
    sa.Column("urls", Json, nullable=True),  # a photo's every *_url
    sa.Column("uploaded_at", UtcDateTime, nullable=True),
    sa.Column("modified_at", UtcDateTime, nullable=True),
    sa.Column("stored_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("order_id", "kind", "name", "sequence"),
)

# The shared send schedule: one row per vendor api key, read and advanced under a row lock by
# every sender on every host, so together they stay under the vendor's rate limit.
send_pacing = sa.Table(
    "send_pacing",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("next_free_at", sa.Double(), nullable=False),  # epoch seconds of the next free slot
)

# One row per budget scope ("*" for a budget shared by all entities, else the entity) and period
# ("month:2026-12"). A writer upserts and locks its rows (in sorted order) before it counts the
# period's orders and inserts one, so racing processes and hosts take turns (core/budgets.py).
budget_periods = sa.Table(
    "budget_periods",
    metadata,
    sa.Column("scope", sa.String(255), primary_key=True),
    sa.Column("period_key", sa.String(32), primary_key=True),
    sa.Column("last_locked_at", UtcDateTime, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("external_property_id", PROPERTY_ID, nullable=True),
    sa.Column("trigger_name", sa.String(100), nullable=True),
    sa.Column("rule_id", sa.String(100), nullable=True),
    sa.Column("rules_version", sa.String(64), nullable=True),
    sa.Column("event_id", BigId, nullable=True),
    sa.Column("order_id", BigId, nullable=True),
    sa.Column("external_order_id", sa.String(255), nullable=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("detail", Json, nullable=False),
    # The hash chain (migration 0003): SHA-256 over the previous row's hash and this row's
    # canonical content. PostgreSQL fills both in a trigger; on SQLite audit.record() does.
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Index(None, "external_property_id", "id"),
    sa.Index(None, "kind", "at"),
    sa.Index(None, "at"),
    # The analyst views join an order's rows and an event's rows on these.
    sa.Index(None, "order_id"),
    sa.Index(None, "event_id"),
    # an order's story (`audit --order`, the console's order page; migration 0015)
    sa.Index(None, "external_order_id"),
)

# One row that every audit writer on PostgreSQL locks (by updating it once per transaction) before
# it reads the chain's last hash: appends form one line even with several processes or hosts, and
# a REPEATABLE READ writer with a stale snapshot gets a serialization error instead of a fork.
# On SQLite, where BEGIN IMMEDIATE already serialises writers, it only holds the head.
audit_chain_head = sa.Table(
    "audit_chain_head",
    metadata,
    sa.Column("id", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("xact_id", sa.BigInteger(), nullable=False, server_default="0"),
    # Where the chain ends (migration 0005), kept by the database on every append: `audit
    # verify` compares the last row with it, so rows cut off the end are noticed.
    sa.Column("last_id", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_hash", sa.String(64), nullable=False, server_default="0" * 64),
)

# Webhook deliveries (migration 0006): every body `propready serve` accepted, masked, once each
# (dedupe_hash), with the fields the applier sorts and matches on. See adapters/store/deliveries.
# Sending paused for every host: the vendor refused the API key whose fingerprint is kept (never
# the key), or an operator paused it (`propready sending pause`). Migration 0010.
sending_pause = sa.Table(
    "sending_pause",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("paused_at", UtcDateTime, nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("key_fingerprint", sa.String(64), nullable=True),
    sa.Column("paused_by", sa.String(255), nullable=False),
)

webhook_delivery = sa.Table(
    "webhook_delivery",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("received_at", UtcDateTime, nullable=False),
    # SHA-256 of the canonical JSON of the masked body: the vendor's retries are stored once.
    sa.Column("dedupe_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False),  # pending|applied|unmatched|malformed
    sa.Column("vendor_order_id", sa.String(64), nullable=True),
    sa.Column("vendor_request_id", sa.String(64), nullable=True),
    sa.Column("external_order_id", sa.String(255), nullable=True),
    sa.Column("external_property_id", PROPERTY_ID, nullable=True),
    sa.Column("event", sa.String(100), nullable=True),
    sa.Column("event_at", UtcDateTime, nullable=True),
    sa.Column("order_status", sa.String(64), nullable=True),  # the status the news stands for
    sa.Column("status_rank", sa.Integer(), nullable=True),  # core.vendor_status.status_rank
    sa.Column("body", Json, nullable=True),  # the masked JSON; NULL when the body was not JSON
    sa.Column("raw_text", sa.Text(), nullable=True),  # the masked text of a non-JSON body
    sa.Column("problem", sa.Text(), nullable=True),  # why malformed / unmatched, what was dropped
    sa.Column("applied_at", UtcDateTime, nullable=True),  # NULL until applied (or replayed)
    sa.Index(None, "state", "applied_at"),
    sa.Index(None, "vendor_order_id", "event_at"),
    sa.Index(None, "external_order_id"),
    sa.Index(None, "received_at"),
)

# --- People: notifications and attention silences (migration 0007) ----------------------------

# Where the notification scanner stands in the audit log. Its row is locked while a scan runs, so
# hosts sharing a PostgreSQL database scan once between them, and fact ids grow in commit order.
notify_cursor = sa.Table(
    "notify_cursor",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("last_audit_id", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("scanned_at", UtcDateTime, nullable=True),
)

# One row per fact worth telling a person: (kind, subject, occurrence) is told once.
notify_fact = sa.Table(
    "notify_fact",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("occurrence", sa.String(100), nullable=False),
    sa.Column("happened_at", UtcDateTime, nullable=False),
    sa.Column("noted_at", UtcDateTime, nullable=False),
    sa.Column("external_property_id", PROPERTY_ID, nullable=True),
    sa.Column("external_order_id", sa.String(255), nullable=True),
    sa.Column("reason", sa.Text(), nullable=True),  # allow-listed, scrubbed
    # Set when an active cause (a refused key, a source outage) made this fact one of a flood.
    sa.Column("suppressed_by", sa.String(40), nullable=True),
    sa.UniqueConstraint("kind", "subject", "occurrence"),
    sa.Index(None, "kind", "id"),
    sa.Index(None, "noted_at"),
)

# Per channel (a fingerprint of its URL, never the URL) and kind: the facts already put into a
# message, and when the last message was made (group_interval counts from it).
notify_group = sa.Table(
    "notify_group",
    metadata,
    sa.Column("channel", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(40), primary_key=True),
    sa.Column("last_fact_id", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_message_at", UtcDateTime, nullable=True),
)

# The notification outbox: one row per (channel, batch), so a failed channel is retried alone.
notify_message = sa.Table(
    "notify_message",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("batch_id", sa.String(40), nullable=False, unique=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("fact_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column(
        "state", sa.String(16), nullable=False
    ),  # pending | sending | sent | failed | dropped
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("lease_until", UtcDateTime, nullable=True),
    sa.Column("first_failed_at", UtcDateTime, nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("sent_at", UtcDateTime, nullable=True),
    sa.Index(None, "state", "next_attempt_at"),
    sa.Index(None, "created_at"),
)

# Once-a-day work (the digest): the first host to insert the (name, local day) row does it.
notify_tick = sa.Table(
    "notify_tick",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("local_day", sa.String(10), primary_key=True),
    sa.Column("at", UtcDateTime, nullable=False),
)

# Acknowledged (until the item changes) or snoozed (until a time) attention items.
attention_silence = sa.Table(
    "attention_silence",
    metadata,
    sa.Column("item", sa.String(400), primary_key=True),
    sa.Column("mode", sa.String(8), nullable=False),  # ack | snooze
    sa.Column("silenced_until", UtcDateTime, nullable=True),
    sa.Column("item_version", sa.String(400), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("silenced_by", sa.String(255), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
)

# --- Write-back of delivered orders to the PM system (migration 0014) --------------------------

# The write-back outbox: one row per delivered order (unique order_id), the statement's named
# parameters (no secrets), and the attempt bookkeeping (core/writeback.py draws the states).
writeback_outbox = sa.Table(
    "writeback_outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("order_id", BigId, sa.ForeignKey("orders.id"), nullable=False, unique=True),
    sa.Column("external_order_id", sa.String(255), nullable=False),
    sa.Column("params", Json, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending|leased|done|failed|given_up
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("lease_until", UtcDateTime, nullable=True),
    sa.Column("first_failed_at", UtcDateTime, nullable=True),  # the current failure streak's
    sa.Column("last_error", sa.Text(), nullable=True),  # the driver's first line, secrets masked
    sa.Column("done_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index(None, "state", "next_attempt_at"),
    sa.Index(None, "external_order_id"),
)

# --- the web console (migration 0015) -----------------------------------------------------------

# People who may log in to the console (`propready users ...`). password_hash is argon2id, NULL
# for a user authenticated by a reverse proxy; session_epoch rises on a password or role change
# and on disabling, which ends that user's sessions (the signed cookie carries the epoch).
console_user = sa.Table(
    "console_user",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("role IN ('viewer', 'approver', 'admin')", name="role_known"),
)

# Signing keys generated once when not configured (the console's session key), shared by every
# `serve` process (adapters/store/console_secrets.py). Never shown, logged or audited.
console_secret = sa.Table(
    "console_secret",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
