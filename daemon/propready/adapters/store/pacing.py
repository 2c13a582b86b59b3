"""The shared send schedule (GCRA, "virtual scheduling"): one row per vendor key, every sender.

Each sender reserves the next free slot under a row lock and moves the row one interval on;
it then waits until its slot. All processes and hosts sharing the state database therefore send
evenly spaced, at most one request per interval together. On PostgreSQL the time comes from the
database server, so hosts with skewed clocks still agree; SQLite serves one host, whose clock
is the same for every process.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from propready.adapters.store.schema import send_pacing


def reserve_send_slot(
    connection: sa.Connection, name: str, interval_seconds: float
) -> tuple[float, float]:
    """Reserve the next send slot for `name`: (slot, now), both in the schedule's epoch seconds."""
    now = _database_now(connection)
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    connection.execute(
        insert(send_pacing).values(name=name, next_free_at=now).on_conflict_do_nothing()
    )
    next_free = connection.execute(
        sa.select(send_pacing.c.next_free_at)
        .where(send_pacing.c.name == name)
        .with_for_update()  # SQLite has no row locks; its BEGIN IMMEDIATE serialises writers
    ).scalar_one()
    slot = max(now, float(next_free))
    connection.execute(
        send_pacing.update()
        .where(send_pacing.c.name == name)
        .values(next_free_at=slot + interval_seconds)
    )
    return slot, now


def push_back(connection: sa.Connection, name: str, seconds: float) -> None:
    """Keep every sender quiet for `seconds` (after a 429: the vendor's window is full)."""
    now = _database_now(connection)
    connection.execute(
        send_pacing.update()
        .where(send_pacing.c.name == name, send_pacing.c.next_free_at < now + seconds)
        .values(next_free_at=now + seconds)
    )


def _database_now(connection: sa.Connection) -> float:
    if connection.dialect.name == "postgresql":
        # clock_timestamp(), not now(): the transaction's start time would lag under contention.
        return float(
            connection.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
        )
    return time.time()
