"""audit: append-only triggers, hash chain and analyst views

- Append-only. PostgreSQL: row triggers refuse UPDATE and DELETE, a statement trigger refuses
  TRUNCATE (audit_log is not partitioned, so there is no partition to forget). SQLite: triggers
  RAISE(ABORT) on UPDATE and DELETE (SQLite has no TRUNCATE; `DELETE FROM t` fires the trigger).
  The triggers are ordinary (ENABLE ORIGIN) ones: a logical-replication apply worker
  (session_replication_role = replica) copies rows without re-hashing them.
- Hash chain (format 1): prev_hash, row_hash = sha256(prev_hash || content). PostgreSQL: the
  BEFORE INSERT trigger audit_log_chain (SECURITY DEFINER, so an insert-only role can append)
  updates the one audit_chain_head row once per transaction, which serialises appends across
  processes and hosts until commit, then assigns id = last id + 1 and the hashes. SQLite: the
  application does it (propready.adapters.store.audit_chain), BEGIN IMMEDIATE serialises writers.
  Rows written before this revision are chained here, in id order.
- Views for analysts (deploy/RUNBOOK.md, "Audit log for analysts"), one SQL text per dialect.
  Caution for later SQLite batch migrations of audit_log or orders: SQLite checks views when a
  table is renamed, so drop these views first and recreate them afterwards.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
VIEWS = (
    "audit_order_lines",
    "audit_orders_by_day",
    "audit_decisions",
    "audit_decisions_by_rule",
    "audit_duplicates_blocked",
    "audit_rejections",
    "audit_rejections_by_field",
    "audit_readiness_to_order",
    "audit_orders_unknown",
)
# The decision a readiness event ended in: the first kind present wins.
OUTCOMES = (
    "order_created",
    "duplicate_blocked",
    "order_planned_dry_run",
    "order_not_plannable",
    "no_rule_matched",
    "rule_matched",
)

PG_CONTENT_FUNCTION = """
CREATE FUNCTION audit_log_content(a audit_log) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT json_build_array(
    a.id, to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), a.kind,
    a.external_property_id, a.trigger_name, a.rule_id, a.rules_version, a.event_id,
    a.order_id, a.external_order_id, a.host, a.detail
  )::text
$$
"""

PG_CHAIN_FUNCTION = """
CREATE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
  last_row record;
BEGIN
  -- Take the chain lock: the first append of a transaction updates the head row (and keeps its
  -- row lock until commit); later appends of the same transaction find it already theirs.
  -- Under REPEATABLE READ a stale snapshot makes this UPDATE fail instead of forking the chain.
  UPDATE audit_chain_head SET xact_id = txid_current()
   WHERE id = 1 AND xact_id <> txid_current();
  IF NOT FOUND AND NOT EXISTS (
    SELECT 1 FROM audit_chain_head WHERE id = 1 AND xact_id = txid_current()
  ) THEN
    RAISE EXCEPTION 'audit_chain_head row 1 is missing: the audit chain cannot be extended';
  END IF;
  SELECT id, row_hash INTO last_row FROM audit_log ORDER BY id DESC LIMIT 1;
  NEW.id := coalesce(last_row.id, 0) + 1;
  NEW.prev_hash := coalesce(last_row.row_hash, repeat('0', 64));
  NEW.row_hash := encode(sha256(convert_to(NEW.prev_hash || audit_log_content(NEW), 'UTF8')),
                         'hex');
  RETURN NEW;
END
$$
"""

PG_REFUSE_FUNCTION = """
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""

PG_TRIGGERS = (
    "CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log"
    " FOR EACH ROW EXECUTE FUNCTION audit_log_chain()",
    "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log"
    " FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()",
    # Without its row the chain lock would silently not be taken.
    "CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head"
    " FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()",
    "CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()",
)

PG_BACKFILL = """
DO $$
DECLARE
  r audit_log;
  prev text := repeat('0', 64);
  h text;
BEGIN
  FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
    h := encode(sha256(convert_to(prev || audit_log_content(r), 'UTF8')), 'hex');
    UPDATE audit_log SET prev_hash = prev, row_hash = h WHERE id = r.id;
    prev := h;
  END LOOP;
END
$$
"""

SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log"
    " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log"
    " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END",
)


class Dialect(NamedTuple):
    """The few SQL fragments that differ between PostgreSQL and SQLite in the views."""

    text: Callable[[str, str], str]  # a JSON member as text
    day: Callable[[str], str]  # the UTC calendar day of a timestamp
    seconds: Callable[[str, str], str]  # seconds from a to b, rounded to milliseconds
    elements: Callable[[str, str, str, bool], str]  # join the elements of a JSON array member
    element: Callable[[str, str], str]  # a member of one such element, as text


POSTGRESQL = Dialect(
    text=lambda col, key: f"({col} ->> '{key}')",
    day=lambda col: f"(({col}) AT TIME ZONE 'UTC')::date",
    seconds=lambda a, b: f"round(extract(epoch FROM ({b}) - ({a})), 3)",
    elements=lambda col, key, alias, left: (
        f"{'LEFT JOIN' if left else 'JOIN'} LATERAL jsonb_array_elements(CASE WHEN"
        f" jsonb_typeof({col} -> '{key}') = 'array' THEN {col} -> '{key}' ELSE '[]'::jsonb END)"
        f" AS {alias}(value) ON true"
    ),
    element=lambda alias, key: f"({alias}.value ->> '{key}')",
)
SQLITE = Dialect(
    text=lambda col, key: f"json_extract({col}, '$.{key}')",
    day=lambda col: f"date({col})",
    seconds=lambda a, b: f"round((julianday({b}) - julianday({a})) * 86400.0, 3)",
    elements=lambda col, key, alias, left: (
        f"{'LEFT JOIN' if left else 'JOIN'} json_each(CASE WHEN json_type({col}, '$.{key}')"
        f" = 'array' THEN json_extract({col}, '$.{key}') ELSE '[]' END) AS {alias} ON 1"
    ),
    element=lambda alias, key: (
        f"(CASE WHEN {alias}.type = 'object' THEN json_extract({alias}.value, '$.{key}') END)"
    ),
)


def view_sql(d: Dialect) -> dict[str, str]:
    """Each view's SELECT, in creation order (later views read earlier ones)."""
    outcome = " ".join(
        f"WHEN max(CASE WHEN d.kind = '{kind}' THEN 1 ELSE 0 END) = 1 THEN '{kind}'"
        for kind in OUTCOMES
    )
    decision_kinds = ", ".join(f"'{kind}'" for kind in OUTCOMES)
    return {
        # One row per placed order and service: what was bought, when, for which entity.
        "audit_order_lines": f"""
            SELECT p.at AS placed_at, {d.day("p.at")} AS day, p.order_id, p.external_order_id,
                   p.external_property_id, c.rule_id,
                   {d.text("c.detail", "billing_entity_slug")} AS billing_entity_slug,
                   {d.element("s", "slug")} AS service_slug,
                   CAST({d.element("s", "quantity")} AS integer) AS quantity
              FROM audit_log p
              JOIN audit_log c ON c.order_id = p.order_id AND c.kind = 'order_created'
              {d.elements("c.detail", "services", "s", False)}
             WHERE p.kind = 'order_placed'""",
        "audit_orders_by_day": """
            SELECT day, billing_entity_slug, service_slug,
                   count(DISTINCT order_id) AS orders, sum(quantity) AS quantity
              FROM audit_order_lines
             GROUP BY day, billing_entity_slug, service_slug""",
        # One row per readiness event and the decision it ended in.
        "audit_decisions": f"""
            SELECT t.event_id, t.at AS fired_at, {d.day("t.at")} AS day,
                   t.external_property_id, t.trigger_name, t.rules_version,
                   max(d.rule_id) AS rule_id,
                   CASE {outcome} ELSE 'undecided' END AS outcome
              FROM audit_log t
              LEFT JOIN audit_log d
                ON d.event_id = t.event_id AND d.id > t.id AND d.kind IN ({decision_kinds})
             WHERE t.kind = 'trigger_fired'
             GROUP BY t.id, t.event_id, t.at, t.external_property_id, t.trigger_name,
                      t.rules_version""",
        "audit_decisions_by_rule": """
            SELECT day, trigger_name, rule_id, outcome, count(*) AS decisions
              FROM audit_decisions
             GROUP BY day, trigger_name, rule_id, outcome""",
        "audit_duplicates_blocked": f"""
            SELECT b.at AS blocked_at, b.external_property_id, b.trigger_name, b.rule_id,
                   b.event_id, b.order_id AS blocking_order_id,
                   b.external_order_id AS blocking_external_order_id,
                   {d.text("b.detail", "blocking_order_created_at")} AS blocking_order_created_at,
                   CAST({d.text("b.detail", "window_hours")} AS numeric) AS window_hours,
                   o.state AS blocking_order_state
              FROM audit_log b
              LEFT JOIN orders o ON o.id = b.order_id
             WHERE b.kind = 'duplicate_blocked'""",
        # One row per field error of a rejected order (field NULL when the vendor named none).
        "audit_rejections": f"""
            SELECT r.at AS rejected_at, r.order_id, r.external_order_id, r.external_property_id,
                   r.rule_id, {d.text("r.detail", "status")} AS status,
                   {d.element("e", "attr")} AS field, {d.element("e", "message")} AS message
              FROM audit_log r
              {d.elements("r.detail", "errors", "e", True)}
             WHERE r.kind = 'order_rejected'""",
        "audit_rejections_by_field": """
            SELECT field, message, count(*) AS rejections, count(DISTINCT order_id) AS orders,
                   min(rejected_at) AS first_at, max(rejected_at) AS last_at
              FROM audit_rejections
             GROUP BY field, message""",
        "audit_readiness_to_order": f"""
            SELECT p.order_id, p.external_order_id, p.external_property_id, c.rule_id,
                   {d.text("c.detail", "billing_entity_slug")} AS billing_entity_slug,
                   t.trigger_name, t.at AS fired_at, c.at AS created_at, p.at AS placed_at,
                   {d.seconds("t.at", "p.at")} AS seconds_to_placed
              FROM audit_log p
              JOIN audit_log c ON c.order_id = p.order_id AND c.kind = 'order_created'
              JOIN audit_log t ON t.event_id = c.event_id AND t.kind = 'trigger_fired'
             WHERE p.kind = 'order_placed'""",
        # The orders table knows the current state; the audit log knows since when and why.
        "audit_orders_unknown": f"""
            SELECT o.id AS order_id, o.external_order_id, o.external_property_id,
                   o.billing_entity_slug, o.rule_id, o.created_at,
                   u.at AS unknown_since, {d.text("u.detail", "reason")} AS reason
              FROM orders o
              LEFT JOIN audit_log u ON u.id = (
                   SELECT max(x.id) FROM audit_log x
                    WHERE x.order_id = o.id AND x.kind = 'order_outcome_unknown')
             WHERE o.state = 'unknown'""",
    }


def _sqlite_content(row: sa.RowMapping) -> str:
    # Chain format 1 on SQLite; must equal propready.adapters.store.audit_chain.sqlite_content.
    at = datetime.fromisoformat(row["at"]) if isinstance(row["at"], str) else row["at"]
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    detail = json.loads(row["detail"]) if isinstance(row["detail"], str) else row["detail"]
    values = [
        row["id"],
        at.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        row["kind"],
        row["external_property_id"],
        row["trigger_name"],
        row["rule_id"],
        row["rules_version"],
        row["event_id"],
        row["order_id"],
        row["external_order_id"],
        row["host"],
        detail,
    ]
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _backfill_sqlite(connection: sa.Connection) -> None:
    prev = GENESIS
    rows = connection.execute(sa.text("SELECT * FROM audit_log ORDER BY id")).mappings().all()
    for row in rows:
        row_hash = hashlib.sha256((prev + _sqlite_content(row)).encode("utf-8")).hexdigest()
        connection.execute(
            sa.text("UPDATE audit_log SET prev_hash = :p, row_hash = :h WHERE id = :id"),
            {"p": prev, "h": row_hash, "id": row["id"]},
        )
        prev = row_hash


def upgrade() -> None:
    connection = op.get_bind()
    postgresql = connection.dialect.name == "postgresql"
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("row_hash", sa.String(64), nullable=True))
    if postgresql:
        op.execute(PG_CONTENT_FUNCTION)
        op.execute(PG_BACKFILL)
    else:
        _backfill_sqlite(connection)
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("row_hash", existing_type=sa.String(64), nullable=False)
    op.create_index("ix_audit_log_order_id", "audit_log", ["order_id"])
    op.create_index("ix_audit_log_event_id", "audit_log", ["event_id"])
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("xact_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain_head"),
    )
    op.execute("INSERT INTO audit_chain_head (id, xact_id) VALUES (1, 0)")
    if postgresql:
        schema = connection.execute(sa.text("SELECT current_schema()")).scalar_one()
        # The trigger assigns ids (last id + 1, under the chain lock): the serial default would
        # only make an insert-only role need the sequence too.
        op.execute("ALTER TABLE audit_log ALTER COLUMN id DROP DEFAULT")
        op.execute("DROP SEQUENCE IF EXISTS audit_log_id_seq")
        op.execute(PG_CHAIN_FUNCTION.format(schema=f'"{schema}"'))
        op.execute(PG_REFUSE_FUNCTION)
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    for name, select in view_sql(POSTGRESQL if postgresql else SQLITE).items():
        op.execute(f"CREATE VIEW {name} AS {select}")


def downgrade() -> None:
    connection = op.get_bind()
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    if connection.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_chain ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.drop_table("audit_chain_head")  # its triggers go with it
        op.execute("DROP FUNCTION IF EXISTS audit_log_chain()")
        op.execute("DROP FUNCTION IF EXISTS audit_log_refuse_change()")
        op.execute("DROP FUNCTION IF EXISTS audit_log_content(audit_log)")
        op.execute("CREATE SEQUENCE audit_log_id_seq OWNED BY audit_log.id")
        op.execute(
            "SELECT setval('audit_log_id_seq', coalesce(max(id), 0) + 1, false) FROM audit_log"
        )
        op.execute("ALTER TABLE audit_log ALTER COLUMN id SET DEFAULT nextval('audit_log_id_seq')")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        op.drop_table("audit_chain_head")
    op.drop_index("ix_audit_log_event_id", table_name="audit_log")
    op.drop_index("ix_audit_log_order_id", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("row_hash")
        batch.drop_column("prev_hash")
