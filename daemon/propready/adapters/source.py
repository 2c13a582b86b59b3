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


FINGERPRINT_COLUMN = "propready_fingerprint"


@dataclass(frozen=True, slots=True)
class SourceBatch:
    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]]
    # PostgreSQL computes a digest of each row next to it (md5 of the row's text form), which
    # costs the server little and spares Python from serialising every value; None elsewhere.
    fingerprints: Sequence[str] | None = None


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
    """Yield the query's rows `batch_size` at a time; SourceUnavailable on any database error.

    The rows are fetched with the driver's own cursor (a named, server-side one on PostgreSQL):
    SQLAlchemy's result layer costs more per row than the driver itself, and a poll of a large
    portfolio is dominated by that per-row cost. SQLAlchemy still compiles the statement, so the
    operator's query keeps `:name` parameters and literal percent signs on every driver.
    """
    is_postgresql = engine.dialect.name == "postgresql"
    if is_postgresql:
        query = (
            f"SELECT md5(CAST(propready_row AS text)) AS {FINGERPRINT_COLUMN}, propready_row.* "
            f"FROM ({query.strip().rstrip(';')}) AS propready_row"
        )
    compiled = sa.text(query).compile(dialect=engine.dialect)
    values = compiled.construct_params(params or {})
    arguments: Any = (
        [values[name] for name in compiled.positiontup] if compiled.positiontup else values
    )
    try:
        connection = engine.raw_connection()
    except sa.exc.DBAPIError as exc:
        raise SourceUnavailable(_describe(exc)) from exc
    except engine.dialect.loaded_dbapi.Error as exc:  # raw_connection() does not wrap it
        raise SourceUnavailable(_describe_driver_error(exc)) from exc
    try:
        if is_postgresql:
            # propready never writes to the PM database; say so to the server too.
            setup = connection.cursor()
            setup.execute("SET TRANSACTION READ ONLY")
            setup.close()
            cursor = connection.driver_connection.cursor(name="propready_source")  # type: ignore[union-attr]
            cursor.itersize = batch_size
        else:
            cursor = connection.cursor()
        try:
            cursor.execute(str(compiled), arguments)
            columns = tuple(d[0] for d in cursor.description)
            while rows := cursor.fetchmany(batch_size):
                if is_postgresql:
                    yield SourceBatch(columns[1:], [r[1:] for r in rows], [r[0] for r in rows])
                else:
                    yield SourceBatch(columns, rows)
        finally:
            cursor.close()
    except engine.dialect.loaded_dbapi.Error as exc:
        raise SourceUnavailable(_describe_driver_error(exc)) from exc
    finally:
        try:
            connection.rollback()
        finally:
            connection.close()


def query_columns(engine: sa.Engine, query: str) -> Sequence[str]:
    """The column names the query returns, without reading its rows."""
    try:
        with engine.connect() as connection:
            wrapped = f"SELECT * FROM ({query.strip().rstrip(';')}) AS propready_columns LIMIT 0"
            return tuple(connection.execute(sa.text(wrapped)).keys())
    except sa.exc.DBAPIError as exc:
        raise SourceUnavailable(_describe(exc)) from exc


def _describe(exc: sa.exc.DBAPIError) -> str:
    return _describe_driver_error(exc.orig if exc.orig is not None else exc)


def _describe_driver_error(error: BaseException) -> str:
    # The driver's first line names the problem without echoing the URL (and its password).
    text = str(error).strip()
    first_line = text.splitlines()[0] if text else ""
    return f"source query failed: {type(error).__name__}: {first_line[:300]}"
