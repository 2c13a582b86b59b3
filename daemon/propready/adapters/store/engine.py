"""State database engines: SQLite tuned for one writer at a time, PostgreSQL via psycopg 3."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from propready.adapters.store import audit


def create_state_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for the state database at `url` (SQLite file or PostgreSQL)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)  # survive a PostgreSQL restart between cycles
    engine = sa.create_engine(parsed, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _name_the_host(dbapi_connection: Any, _record: Any) -> None:
        # The audit trigger stamps each row's host from this session setting (migration 0005),
        # so it is set once per connection rather than sent with every row.
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT set_config('propready.host', %s, false)", (audit.HOST,))
        cursor.close()
        dbapi_connection.commit()

    return engine


def _sqlite_engine(url: sa.URL, **kwargs: Any) -> sa.Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        _create_private(Path(url.database))
    engine = sa.create_engine(url, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself (below) instead of pysqlite's lazy implicit BEGIN,
        # which runs reads outside the transaction and lets racing writers both pass a check.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front: check-then-insert is atomic across processes.
        # A transaction that only reads (see `reading`) does not need it and must not block
        # writers while the caller thinks.
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_READ_ONLY = "propready_read_only"


@contextmanager
def reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that only reads: on SQLite a deferred BEGIN, so it takes no write lock."""
    with reader(engine) as connection, connection.begin():
        yield connection


@contextmanager
def reader(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for many short read transactions (`with connection.begin():` each): taken
    from the pool, and checked, once, where `reading` would do both per transaction."""
    with engine.connect() as connection:
        connection.execution_options(**{_READ_ONLY: True})
        yield connection


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (0600) if it does not exist yet.

    The state holds order payloads with access codes. SQLite gives the `-wal` and `-shm` files
    the mode of the database file, so they are private too; whatever the process umask is (the
    unit sets 0077, but `propready db upgrade` run by hand may not). An existing file keeps the
    mode an operator gave it.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)
