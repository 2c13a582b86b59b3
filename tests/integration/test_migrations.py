"""The migrations produce exactly the schema the code expects, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import metadata

REPO = Path(__file__).resolve().parents[2]


def _schema_diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_migrated_schema_matches_the_code(state_engine: sa.Engine) -> None:
    """After `upgrade head` there is no difference between the database and schema.py."""
    assert migrate.is_at_head(state_engine)
    assert _schema_diff(state_engine) == []


def test_upgrade_from_empty_on_postgresql(pg_database: str) -> None:
    """An empty PostgreSQL database is upgraded to head, and a second upgrade changes nothing."""
    engine = create_state_engine(pg_database)
    try:
        assert migrate.upgrade(engine) == (None, migrate.head_revision())
        assert migrate.upgrade(engine) == (migrate.head_revision(), migrate.head_revision())
        assert _schema_diff(engine) == []
    finally:
        engine.dispose()


def test_upgrade_from_empty_on_sqlite(tmp_path: Path) -> None:
    """A SQLite file that does not exist yet is created and upgraded to head."""
    engine = create_state_engine(f"sqlite:///{tmp_path / 'sub' / 'state.db'}")
    try:
        assert migrate.upgrade(engine)[0] is None
        assert _schema_diff(engine) == []
    finally:
        engine.dispose()


def test_db_upgrade_works_from_an_installed_wheel(tmp_path: Path) -> None:
    """The wheel carries the migrations: `propready db upgrade` runs from it, outside the repo."""
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("propready-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "propready/migrations/env.py" in names
        archive.extractall(site)
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
        '[source]\nurl = "sqlite:///pm.db"\nquery = "SELECT 1 AS external_property_id"\n'
    )
    code = (
        "import sys, propready; assert propready.__file__.startswith(sys.argv[1]), propready.__file__;"
        "from propready.cli.main import main; sys.argv = ['propready', '--config', sys.argv[2], 'db', 'upgrade']; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(site), str(config)],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "upgraded from empty to" in result.stdout
