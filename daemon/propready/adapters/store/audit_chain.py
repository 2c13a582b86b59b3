"""The audit log's hash chain: how a row is hashed, appended (SQLite) and verified (both).

Each row carries `prev_hash` (the previous row's `row_hash`, or GENESIS for the first row) and
`row_hash` = SHA-256(prev_hash + canonical content). Changing, deleting or inserting a row in the
middle breaks the chain at that row; `verify_chain` finds the first break.

The canonical content is rendered where the hash is computed:
- PostgreSQL: the SQL function `audit_log_content(audit_log)` (migration 0003), used by the
  insert trigger and by `verify_chain`, so JSONB's own normal form is hashed as stored.
- SQLite: `sqlite_content()` below, used by `append_sqlite` and by `verify_chain`.
Both are frozen formats (chain format 1): changing either breaks every existing chain.

The chain cannot show on its own that rows were cut off its end, so the database keeps a head
(`audit_chain_head.last_id`, `last_hash`, migration 0005) on every append, and `audit verify`
compares the last row with it (`head_problem`) and checks that every trigger guarding the audit
tables exists and is enabled (`trigger_problems`). A tamperer who also rewrites the head is
caught by an anchor: the head published earlier (the daemon logs `audit_anchor` and exports it
as a metric) and given back to `audit verify --anchor ID:HASH` (`anchor_matches`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import audit_chain_head, audit_log

GENESIS = "0" * 64
CONTENT_COLUMNS = (
    "id",
    "at",
    "kind",
    "external_property_id",
    "trigger_name",
    "rule_id",
    "rules_version",
    "event_id",
    "order_id",
    "external_order_id",
    "host",
    "detail",
)


def chain_hash(prev_hash: str, content: str) -> str:
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()


def sqlite_content(row: Mapping[str, Any] | sa.RowMapping) -> str:
    """Chain format 1 on SQLite: a compact JSON array of the row's columns, keys sorted."""
    values = [row.get(column) for column in CONTENT_COLUMNS]
    at = row["at"]
    values[1] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def append_sqlite(connection: sa.Connection, values: dict[str, Any]) -> None:
    """Insert one row with its id and hashes, chained to the last row.

    The caller's transaction began with BEGIN IMMEDIATE (engine.py), so no other writer can
    append between reading the last row and inserting this one.
    """
    last = connection.execute(
        sa.select(audit_log.c.id, audit_log.c.row_hash).order_by(audit_log.c.id.desc()).limit(1)
    ).first()
    # JSON round trip: hash exactly what will be read back (tuples become lists, keys strings).
    values = {**values, "detail": json.loads(json.dumps(values["detail"]))}
    values["id"] = 1 if last is None else int(last.id) + 1
    values["prev_hash"] = GENESIS if last is None else str(last.row_hash)
    values["row_hash"] = chain_hash(values["prev_hash"], sqlite_content(values))
    connection.execute(audit_log.insert().values(**values))


@dataclass(frozen=True)
class ChainReport:
    """The result of walking the chain: `broken_id` is None when every row checks out."""

    rows: int
    head_id: int | None
    head_hash: str | None
    broken_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_id is None


def _rows_with_content(
    connection: sa.Connection, batch: int
) -> Generator[tuple[int, str, str, str]]:
    if connection.dialect.name == "postgresql":
        result = connection.execution_options(yield_per=batch).execute(
            sa.text(
                "SELECT a.id, a.prev_hash, a.row_hash, audit_log_content(a) AS content"
                " FROM audit_log a ORDER BY a.id"
            )
        )
        with closing(result):  # a server-side cursor: close it even when the walk stops early
            for pg_row in result:
                yield int(pg_row.id), pg_row.prev_hash, pg_row.row_hash, pg_row.content
        return
    result = connection.execution_options(yield_per=batch).execute(
        sa.select(audit_log).order_by(audit_log.c.id)
    )
    with closing(result):
        for row in result.mappings():
            yield int(row["id"]), row["prev_hash"], row["row_hash"], sqlite_content(row)


def verify_chain(connection: sa.Connection, *, batch: int = 10_000) -> ChainReport:
    """Walk every row in id order; stop at the first whose link or content does not check out."""
    with closing(_rows_with_content(connection, batch)) as rows:
        return _walk(rows)


def _walk(rows: Iterator[tuple[int, str, str, str]]) -> ChainReport:
    expected_prev = GENESIS
    count = 0
    last_id: int | None = None
    for row_id, prev_hash, row_hash, content in rows:
        count += 1
        if prev_hash != expected_prev:
            return ChainReport(
                count - 1,
                last_id,
                expected_prev,
                row_id,
                "its prev_hash is not the previous row's hash: a row before it was deleted, "
                "inserted or altered",
            )
        if chain_hash(prev_hash, content) != row_hash:
            return ChainReport(
                count - 1,
                last_id,
                expected_prev,
                row_id,
                "its content does not match its row_hash: the row was altered",
            )
        expected_prev = row_hash
        last_id = row_id
    return ChainReport(count, last_id, None if last_id is None else expected_prev)


def anchor_matches(connection: sa.Connection, row_id: int, row_hash: str) -> bool:
    """Whether row `row_id` still carries the hash an operator noted down earlier.

    The chain alone cannot show that rows were cut off its end; an anchor kept elsewhere can.
    """
    found = connection.execute(
        sa.select(audit_log.c.row_hash).where(audit_log.c.id == row_id)
    ).scalar_one_or_none()
    return found == row_hash


# Every trigger that guards the audit tables, by table (migrations 0003 and 0005).
PG_TRIGGERS: dict[str, tuple[str, ...]] = {
    "audit_log": ("audit_log_chain", "audit_log_no_truncate", "audit_log_no_update_delete"),
    "audit_chain_head": ("audit_chain_head_no_delete", "audit_chain_head_no_truncate"),
}
SQLITE_TRIGGERS: dict[str, tuple[str, ...]] = {
    "audit_log": ("audit_chain_head_advance", "audit_log_no_delete", "audit_log_no_update"),
    "audit_chain_head": ("audit_chain_head_no_delete",),
}
# pg_trigger.tgenabled: O fires normally, A always; D is disabled, R fires only on replicas.
_PG_DISABLED = {"D": "disabled", "R": "enabled for replicas only, so it does not fire"}


def chain_head(connection: sa.Connection) -> tuple[int, str] | None:
    """(last id, last hash) as the database's head row says, or None when the row is gone."""
    row = connection.execute(
        sa.select(audit_chain_head.c.last_id, audit_chain_head.c.last_hash).where(
            audit_chain_head.c.id == 1
        )
    ).first()
    return None if row is None else (int(row.last_id), str(row.last_hash))


def head_problem(connection: sa.Connection, report: ChainReport) -> str | None:
    """Why the chain's last row disagrees with the head row, or None when they agree."""
    head = chain_head(connection)
    if head is None:
        return "the chain head row (audit_chain_head id 1) is missing"
    last_id, last_hash = head
    if (report.head_id or 0, report.head_hash or GENESIS) == (last_id, last_hash):
        return None
    if report.head_id is not None and last_id > report.head_id:
        return (
            f"the chain head says the last row is {last_id} but the log ends at row "
            f"{report.head_id}: rows were deleted from the end"
        )
    return (
        f"the chain head says row {last_id} with hash {last_hash[:12]}..., the log ends at row "
        f"{report.head_id or 0} with {(report.head_hash or GENESIS)[:12]}...: the head or the "
        "last rows were changed"
    )


def trigger_problems(connection: sa.Connection) -> list[str]:
    """One line per guarding trigger that is missing or disabled."""
    problems = []
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            sa.text(
                "SELECT c.relname AS table_name, t.tgname AS name, t.tgenabled AS enabled"
                " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE NOT t.tgisinternal AND c.relname IN ('audit_log', 'audit_chain_head')"
                " AND c.relnamespace = current_schema()::regnamespace"
            )
        ).all()
        found = {(r.table_name, r.name): str(r.enabled) for r in rows}
        expected = PG_TRIGGERS
    else:
        rows = connection.execute(
            sa.text(
                "SELECT tbl_name AS table_name, name FROM sqlite_master WHERE type = 'trigger'"
                " AND tbl_name IN ('audit_log', 'audit_chain_head')"
            )
        ).all()
        found = {(r.table_name, r.name): "O" for r in rows}
        expected = SQLITE_TRIGGERS
    for table, names in expected.items():
        for name in names:
            state = found.get((table, name))
            if state is None:
                problems.append(f"trigger {name} on {table} is missing")
            elif state in _PG_DISABLED:
                problems.append(f"trigger {name} on {table} is {_PG_DISABLED[state]}")
    return problems


def audit_owner_role(connection: sa.Connection) -> str | None:
    """The connected role's name when it owns audit_log or is a superuser (PostgreSQL), else None.

    Such a role can disable the triggers that guard the log; the daemon should not be one.
    SQLite has no roles: whoever can write the file can do anything, so None.
    """
    if connection.dialect.name != "postgresql":
        return None
    row = connection.execute(
        sa.text(
            "SELECT session_user AS role, pg_has_role(session_user, c.relowner, 'MEMBER') AS owns"
            " FROM pg_class c WHERE c.oid = to_regclass('audit_log')"
        )
    ).first()
    return str(row.role) if row is not None and row.owns else None
