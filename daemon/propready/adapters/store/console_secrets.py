"""Signing keys kept in the state database (table console_secret, migration 0015).

A key that is not configured is generated once and shared by every `serve` process on every
host: the first process to start inserts its candidate, later ones (and one racing it) keep the
stored value (insert-if-absent, then read back).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from propready.adapters.store.schema import console_secret

SESSION_KEY = "console_session"


def stored_secret(engine: sa.Engine, name: str, generate: Callable[[], str], now: datetime) -> str:
    """The secret called `name`, generated with `generate` and stored if there is none yet."""
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(console_secret)
        .values(name=name, value=generate(), created_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    with engine.begin() as connection:
        connection.execute(statement)
    with engine.connect() as connection:
        value = connection.execute(
            sa.select(console_secret.c.value).where(console_secret.c.name == name)
        ).scalar_one()
    return str(value)
