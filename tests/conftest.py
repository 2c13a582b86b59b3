"""Shared fixtures: a fresh, migrated state database per test on SQLite and on PostgreSQL.

PostgreSQL databases are cloned from a template migrated once per session (fast), and dropped
afterwards. PostgreSQL must be reachable on 127.0.0.1:5432 (role root, trust auth, or
$PROPREADY_TEST_PG_URL); tests fail rather than skip when it is not, so CI cannot go green
without having run them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine

PG_ADMIN_URL = os.environ.get("PROPREADY_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
PG_BASE = PG_ADMIN_URL.rsplit("/", 1)[0]


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test clones."""
    name = f"propready_tmpl_{os.getpid()}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
    _pg_admin(f'CREATE DATABASE "{name}"')
    engine = create_state_engine(f"{PG_BASE}/{name}")
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "state.db"
    engine = create_state_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def pg_database() -> Iterator[str]:
    """An empty PostgreSQL database (not migrated), dropped afterwards."""
    name = f"propready_t_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    yield f"{PG_BASE}/{name}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated state database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"propready_t_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield f"{PG_BASE}/{name}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_state_url(pg_template: str) -> Iterator[str]:
    """A fresh migrated PostgreSQL state database, for what only PostgreSQL does (several hosts)."""
    name = f"propready_t_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield f"{PG_BASE}/{name}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def state_engine(state_url: str) -> Iterator[sa.Engine]:
    engine = create_state_engine(state_url)
    yield engine
    engine.dispose()
