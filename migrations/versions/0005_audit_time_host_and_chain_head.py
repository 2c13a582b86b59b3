"""audit: the database stamps time and host, and keeps the chain head (last id and hash)

- audit_chain_head gains last_id and last_hash: the row the chain ends at, maintained by the
  database on every append (PostgreSQL: the SECURITY DEFINER chain trigger, which now reads the
  previous row's hash from the head instead of searching audit_log; SQLite: an AFTER INSERT
  trigger). `audit verify` compares the last row with the head, so rows deleted from the end
  behind the triggers' back are caught. Filled here from the existing last row.
- PostgreSQL: the chain trigger also sets `at` to clock_timestamp() and `host` to the session
  setting propready.host (the daemon sets it as each connection opens; else the client address)
  unless the role that logged in owns audit_log (or is a superuser). The owner is trusted anyway (it could disable the triggers), and is what tests and
  data imports use to write historical times; the daemon's role must not be the owner
  (deploy/RUNBOOK.md, "Database roles"; `propready check` warns).
- SQLite has no server and no roles: the application stamps `at` and `host` and the chain
  (propready.adapters.store.audit_chain.append_sqlite), as before.

Revision ID: 0005
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0010"
branch_labels = None
depends_on = None

GENESIS = "0" * 64

PG_CHAIN_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
  head record;
BEGIN
  -- Time and host come from the database unless the writer owns audit_log (or is a
  -- superuser). session_user, not current_user: inside SECURITY DEFINER current_user is the
  -- function's owner, while session_user is the role that logged in and cannot be changed
  -- without superuser rights.
  IF NEW.at IS NULL OR NEW.host IS NULL OR NOT pg_has_role(
       session_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'MEMBER') THEN
    NEW.at := clock_timestamp();
    NEW.host := left(coalesce(nullif(current_setting('propready.host', true), ''),
                              host(inet_client_addr()), 'local'), 255);
  END IF;
  -- The head row is the chain lock: locked by the first append of a transaction until commit
  -- (a REPEATABLE READ writer with a stale snapshot gets a serialization error, not a fork),
  -- and it holds the last id and hash, so no search of audit_log is needed.
  SELECT last_id, last_hash INTO head FROM audit_chain_head WHERE id = 1 FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'audit_chain_head row 1 is missing: the audit chain cannot be extended';
  END IF;
  NEW.id := head.last_id + 1;
  NEW.prev_hash := head.last_hash;
  NEW.row_hash := encode(sha256(convert_to(NEW.prev_hash || audit_log_content(NEW), 'UTF8')),
                         'hex');
  UPDATE audit_chain_head SET last_id = NEW.id, last_hash = NEW.row_hash,
                              xact_id = txid_current()
   WHERE id = 1;
  RETURN NEW;
END
$$
"""

PG_OLD_CHAIN_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
  last_row record;
BEGIN
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

SQLITE_HEAD_TRIGGER = (
    "CREATE TRIGGER audit_chain_head_advance AFTER INSERT ON audit_log"
    " BEGIN UPDATE audit_chain_head SET last_id = NEW.id, last_hash = NEW.row_hash"
    " WHERE id = 1; END"
)
# Without its row the head could not follow the chain (PostgreSQL has this since 0003).
SQLITE_HEAD_NO_DELETE = (
    "CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head"
    " BEGIN SELECT RAISE(ABORT, 'audit_chain_head is append-only: DELETE refused'); END"
)

FILL_HEAD = """
UPDATE audit_chain_head
   SET last_id = coalesce((SELECT max(id) FROM audit_log), 0),
       last_hash = coalesce((SELECT row_hash FROM audit_log ORDER BY id DESC LIMIT 1), :genesis)
 WHERE id = 1
"""


def upgrade() -> None:
    connection = op.get_bind()
    postgresql = connection.dialect.name == "postgresql"
    with op.batch_alter_table("audit_chain_head") as batch:
        batch.add_column(sa.Column("last_id", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("last_hash", sa.String(64), server_default=GENESIS, nullable=False)
        )
    connection.execute(sa.text(FILL_HEAD), {"genesis": GENESIS})
    if postgresql:
        schema = connection.execute(sa.text("SELECT current_schema()")).scalar_one()
        op.execute(PG_CHAIN_FUNCTION.format(schema=f'"{schema}"'))
    else:
        op.execute(SQLITE_HEAD_TRIGGER)
        op.execute(SQLITE_HEAD_NO_DELETE)


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        schema = connection.execute(sa.text("SELECT current_schema()")).scalar_one()
        op.execute(PG_OLD_CHAIN_FUNCTION.format(schema=f'"{schema}"'))
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_chain_head_advance")
        op.execute("DROP TRIGGER IF EXISTS audit_chain_head_no_delete")
    with op.batch_alter_table("audit_chain_head") as batch:
        batch.drop_column("last_hash")
        batch.drop_column("last_id")
