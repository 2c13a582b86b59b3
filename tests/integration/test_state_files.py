"""SQLite state files are private to the service's user, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import sqlalchemy as sa

from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine


def test_a_new_sqlite_state_database_and_its_wal_files_are_0600(tmp_path: Path) -> None:
    """Under umask 022 the database, -wal and -shm files are still created 0600."""
    path = tmp_path / "new" / "state.db"
    previous = os.umask(0o022)
    try:
        engine = create_state_engine(f"sqlite:///{path}")
        migrate.upgrade(engine)
        with engine.connect() as connection:  # WAL keeps -wal and -shm while a reader is open
            connection.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one()
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.glob("state.db*")}
        engine.dispose()
    finally:
        os.umask(previous)
    assert set(modes) == {"state.db", "state.db-wal", "state.db-shm"}
    assert modes == dict.fromkeys(modes, 0o600)


def test_an_existing_state_database_keeps_its_mode(tmp_path: Path) -> None:
    """An operator's own mode on an existing file is left alone."""
    path = tmp_path / "state.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    create_state_engine(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
