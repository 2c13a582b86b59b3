"""The property-management database: read-only, any SQLAlchemy URL, streamed in bounded batches.

Rows come back as plain tuples in batches of `batch_size` from a server-side cursor (PostgreSQL)
or the driver's incremental fetch (SQLite), so memory does not grow with the portfolio.
An incremental poll wraps the operator's query:

    SELECT * FROM (<query>) AS propready_source WHERE <cursor> >= :since ORDER BY <cursor>

so a source with an index on the cursor column reads only what changed; rows are then ordered
by the cursor, which lets the checkpoint advance batch by batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from propready.core.facts import InvalidText

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SourceUnavailable(RuntimeError):
    """The PM database cannot be reached or the query fails; transient, retried with backoff."""


@dataclass(frozen=True, slots=True)
class SourceBatch:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def _decode_text(raw: bytes) -> str | InvalidText:
    # SQLite returns whatever bytes were stored; one bad row must not abort the whole stream.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(raw)


def create_source_engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parsed, pool_pre_ping=True)
    if parsed.get_backend_name() == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _read_only(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.text_factory = _decode_text
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only=ON")  # propready never writes to the PM database
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    return engine


def incremental_query(query: str, cursor_column: str) -> str:
    if not _IDENTIFIER.match(cursor_column):
        raise ValueError(f"cursor_column {cursor_column!r} must be a plain column name")
    return (
        f"SELECT * FROM ({query.strip().rstrip(';')}) AS propready_source "
        f"WHERE {cursor_column} >= :since ORDER BY {cursor_column}"
    )


def stream_batches(
    engine: sa.Engine,
    query: str,
    batch_size: int,
    params: dict[str, Any] | None = None,
) -> Iterator[SourceBatch]:
    """Yield the query's rows `batch_size` at a time; SourceUnavailable on any database error."""
    options: dict[str, Any] = {"stream_results": True, "yield_per": batch_size}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    try:
        with engine.connect() as connection:
            result = connection.execution_options(**options).execute(sa.text(query), params or {})
            columns = tuple(result.keys())
            for partition in result.partitions(batch_size):
                yield SourceBatch(columns, [tuple(row) for row in partition])
    except sa.exc.DBAPIError as exc:
        raise SourceUnavailable(_describe(exc)) from exc


def query_columns(engine: sa.Engine, query: str) -> Sequence[str]:
    """The column names the query returns, without reading its rows."""
    try:
        with engine.connect() as connection:
            wrapped = f"SELECT * FROM ({query.strip().rstrip(';')}) AS propready_columns LIMIT 0"
            return tuple(connection.execute(sa.text(wrapped)).keys())
    except sa.exc.DBAPIError as exc:
        raise SourceUnavailable(_describe(exc)) from exc


def _describe(exc: sa.exc.DBAPIError) -> str:
    # The driver's first line names the problem without echoing the URL (and its password).
    first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
    return f"source query failed: {type(exc.orig).__name__}: {first_line[:300]}"
