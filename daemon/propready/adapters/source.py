"""The property-management database: read-only, any SQLAlchemy URL, streamed in batches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url


class SourceUnavailable(RuntimeError):
    """The PM database cannot be reached or the query fails; transient, retried next cycle."""


def create_source_engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parsed, pool_pre_ping=True)
    if parsed.get_backend_name() == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only=ON")  # propready never writes to the PM database
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    return engine


def stream_rows(engine: sa.Engine, query: str, batch_size: int) -> Iterator[Mapping[str, Any]]:
    """Yield the source query's rows as mappings, `batch_size` at a time from the server."""
    options: dict[str, Any] = {"stream_results": True, "yield_per": batch_size}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    try:
        with engine.connect() as connection:
            result = connection.execution_options(**options).execute(sa.text(query))
            for row in result.mappings():
                yield dict(row)
    except sa.exc.DBAPIError as exc:
        raise SourceUnavailable(
            f"source query failed: {type(exc.orig).__name__}: {str(exc.orig).splitlines()[0]}"
        ) from exc
