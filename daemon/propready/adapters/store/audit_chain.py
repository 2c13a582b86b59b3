"""The audit log's hash chain: how a row is hashed, appended (SQLite) and verified (both).

Each row carries `prev_hash` (the previous row's `row_hash`, or GENESIS for the first row) and
`row_hash` = SHA-256(prev_hash + canonical content). Changing, deleting or inserting a row in the
middle breaks the chain at that row; `verify_chain` finds the first break.

The canonical content is rendered where the hash is computed:
- PostgreSQL: the SQL function `audit_log_content(audit_log)` (migration 0003), used by the
  insert trigger and by `verify_chain`, so JSONB's own normal form is hashed as stored.
- SQLite: `sqlite_content()` below, used by `append_sqlite` and by `verify_chain`.
Both are frozen formats (chain format 1): changing either breaks every existing chain.
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

from propready.adapters.store.schema import audit_log

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
