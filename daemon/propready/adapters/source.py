"""The property-management database: read-only, any SQLAlchemy URL, streamed in bounded batches.

Rows come back as plain tuples in batches of `batch_size` from a server-side cursor (PostgreSQL)
or the driver's incremental fetch (SQLite), so memory does not grow with the portfolio.
An incremental poll wraps the operator's query:

    SELECT * FROM (<query>) AS propready_source WHERE <cursor> >= :since ORDER BY <cursor>

so a source with an index on the cursor column reads only what changed; rows are then ordered
by the cursor, which lets the checkpoint advance batch by batch.

Read-only on every path: every connection of a source engine is read-only for its whole session
(PostgreSQL: `default_transaction_read_only` set as each connection opens, so a query that
commits and then writes is still refused by the server; SQLite: `PRAGMA query_only`), and the
column probe (`query_columns`) runs on the same engine. The configuration accepts only a single
statement as the query (settings.py). Error texts keep the driver's first line with quoted
literals masked: PostgreSQL quotes row values there (`invalid input syntax for type integer:
"4821"`, where 4821 may be a lockbox code), and the text goes to the log, `/healthz`, `check`
and the state database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from propready.core.facts import InvalidText

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SourceUnavailable(RuntimeError):
    """The PM database cannot be reached or the query fails; transient, retried with backoff."""


FINGERPRINT_COLUMN = "propready_fingerprint"
_FINGERPRINT, _VALUES = itemgetter(0), itemgetter(slice(1, None))


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
    if parsed.get_backend_name() == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _read_only_session(dbapi_connection: Any, _record: Any) -> None:
            # The session default, not one transaction's mode: a query that ends the transaction
            # (`...; COMMIT; DELETE ...`) starts the next one read-only too. Set with SET rather
            # than the libpq `options` startup parameter, which poolers such as PgBouncer refuse.
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cursor.close()
            dbapi_connection.commit()

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
        f"SELECT * FROM ({_inner(query)}) AS propready_source "
        f"WHERE {cursor_column} >= :since ORDER BY {cursor_column}"
    )


def homes_query(query: str, count: int) -> tuple[str, list[str]]:
    """The operator's query for `count` given homes only, and the names of its id parameters."""
    names = [f"propready_home_{n}" for n in range(count)]
    placeholders = ", ".join(f":{name}" for name in names)
    wrapped = (
        f"SELECT * FROM ({_inner(query)}) AS propready_homes "
        f"WHERE external_property_id IN ({placeholders})"
    )
    return wrapped, names


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
            f"FROM ({_inner(query)}) AS propready_row"
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
    except engine.dialect.loaded_dbapi.Error as exc:  # the pool hands the driver's own error
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
                if is_postgresql:  # the fingerprint first, then the operator's columns
                    yield SourceBatch(
                        columns[1:], list(map(_VALUES, rows)), list(map(_FINGERPRINT, rows))
                    )
                else:
                    yield SourceBatch(columns, rows)
        finally:
            cursor.close()
    except engine.dialect.loaded_dbapi.Error as exc:
        raise SourceUnavailable(_describe_driver_error(exc)) from exc
    finally:
        _release(connection, engine.dialect.loaded_dbapi.Error)


def _release(connection: Any, driver_error: type[BaseException]) -> None:
    """End the read and give the connection back; a connection the outage already broke cannot
    roll back, and must not turn a reported outage into a crash."""
    try:
        connection.rollback()
    except driver_error:
        connection.invalidate()
    finally:
        connection.close()


def repeated_property_ids(engine: sa.Engine, query: str) -> set[str]:
    """The ids several rows of the query share (as the poll reads ids: trimmed text).

    Asked before a full pass, so that no row of a repeated id is used: which row is "the" home
    cannot be known. One grouped scan on the source's side; SourceUnavailable on any error.
    """
    wrapped = sa.text(
        "SELECT trim(CAST(external_property_id AS TEXT)) AS id "
        f"FROM ({_inner(query)}) AS propready_ids "
        "WHERE external_property_id IS NOT NULL "
        "GROUP BY trim(CAST(external_property_id AS TEXT)) HAVING count(*) > 1"
    )
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            return {str(row[0]) for row in connection.execute(wrapped)}
    except sa.exc.DBAPIError as exc:
        raise SourceUnavailable(_describe(exc)) from exc
    except engine.dialect.loaded_dbapi.Error as exc:
        raise SourceUnavailable(_describe_driver_error(exc)) from exc


def query_columns(engine: sa.Engine, query: str) -> Sequence[str]:
    """The column names the query returns, without reading its rows."""
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            wrapped = f"SELECT * FROM ({_inner(query)}) AS propready_columns LIMIT 0"
            return tuple(connection.execute(sa.text(wrapped)).keys())
    except sa.exc.DBAPIError as exc:
        raise SourceUnavailable(_describe(exc)) from exc


def _inner(query: str) -> str:
    """The operator's query, ready to sit inside `(...)`: no trailing `;`, and a line break
    before the closing parenthesis so a trailing `-- comment` cannot swallow it."""
    return query.strip().rstrip(";").rstrip() + "\n"


def _describe(exc: sa.exc.DBAPIError) -> str:
    return _describe_driver_error(exc.orig if exc.orig is not None else exc)


def _describe_driver_error(error: BaseException) -> str:
    return f"source query failed: {type(error).__name__}: {scrub_driver_text(str(error))}"


# A quoted literal in a driver message: '...' or "..." (doubled quotes inside are part of it).
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
# Words after which the driver quotes a name, not a value: names say where the fault is and
# are kept (`relation "units" does not exist`, `connection to server at "10.0.0.5"`).
_NAMED_BY = re.compile(
    r"(?:relation|column|role|database|schema|table|function|type|constraint|index|sequence|"
    r"view|operator|extension|server at|host|user|of relation|of table)\s*$",
    re.IGNORECASE,
)


def scrub_driver_text(text: str) -> str:
    """The driver's first line, quoted literals masked, at most 300 characters.

    Later lines (PostgreSQL's DETAIL, LINE and CONTEXT) quote keys, rows and the query; the
    first line names the problem without echoing the URL (and its password), but may quote the
    offending value (`invalid input syntax for type integer: "4821"`), so every quoted literal
    becomes `"***"`, except the names a fault is about (`relation "units" does not exist`,
    `role "pm_reader"`, `server at "10.0.0.5"`), which the operator needs to fix it.
    """
    stripped = text.strip()
    first_line = stripped.splitlines()[0] if stripped else ""

    def mask(match: re.Match[str]) -> str:
        if _NAMED_BY.search(first_line[: match.start()]):
            return match.group(0)
        return '"***"'

    return _QUOTED.sub(mask, first_line)[:300]
