"""The PM database stays read-only on every path, and its error texts carry no row values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from propready.adapters.source import (
    SourceUnavailable,
    create_source_engine,
    query_columns,
    stream_batches,
)
from propready.settings import ConfigError, load_settings
from tests.integration.cycle_support import REPO

# Breaks out of the subquery propready wraps the query in, commits, and deletes.
ESCAPE = (
    "SELECT code AS external_property_id FROM units) AS x; COMMIT; DELETE FROM units; "
    "SELECT * FROM (SELECT 1"
)
CTE_DELETE = "WITH d AS (DELETE FROM units RETURNING *) SELECT code AS external_property_id FROM d"


def _make_units(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE units (code TEXT PRIMARY KEY, beds TEXT)")
        connection.exec_driver_sql("INSERT INTO units VALUES ('U1', '3'), ('U2', '4821x')")
    engine.dispose()


def _count(url: str) -> int:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        count = int(connection.exec_driver_sql("SELECT count(*) FROM units").scalar_one())
    engine.dispose()
    return count


@pytest.fixture(params=["sqlite", "postgresql"])
def source_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A PM database with two units, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pm.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    _make_units(url)
    return url


def test_the_column_probe_cannot_commit_and_then_delete(source_url: str) -> None:
    """A query that escapes its subquery, commits and deletes is refused; the rows remain."""
    engine = create_source_engine(source_url)
    try:
        with pytest.raises(SourceUnavailable):
            query_columns(engine, ESCAPE)
        with pytest.raises(SourceUnavailable):
            list(stream_batches(engine, ESCAPE, 10))
    finally:
        engine.dispose()
    assert _count(source_url) == 2


def test_every_connection_of_a_source_engine_is_read_only(source_url: str) -> None:
    """On any connection of the engine, a write after COMMIT and a deleting CTE are refused."""
    engine = create_source_engine(source_url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":  # pysqlite has no transaction open yet
                connection.exec_driver_sql("COMMIT")
            with pytest.raises(sa.exc.DBAPIError, match=r"read-?only"):
                connection.exec_driver_sql("DELETE FROM units")
        if engine.dialect.name == "postgresql":  # SQLite has no data-modifying CTE
            with (
                engine.connect() as connection,
                pytest.raises(sa.exc.DBAPIError, match="read-only transaction"),
            ):
                connection.exec_driver_sql(CTE_DELETE).all()
    finally:
        engine.dispose()
    assert _count(source_url) == 2


def test_a_source_error_text_masks_the_row_value(pg_database: str) -> None:
    """PostgreSQL quotes the offending value ("4821x"); the reported text masks it."""
    _make_units(pg_database)
    engine = create_source_engine(pg_database)
    query = "SELECT code AS external_property_id, CAST(beds AS integer) AS bedrooms FROM units"
    try:
        with pytest.raises(SourceUnavailable) as caught:
            list(stream_batches(engine, query, 10))
    finally:
        engine.dispose()
    text = str(caught.value)
    assert "invalid input syntax for type integer" in text
    assert "4821" not in text
    assert '"***"' in text
    assert "\n" not in text


def _config(tmp_path: Path, source_url: str, query: str, extra: str = "") -> Path:
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
        f'[source]\nurl = "{source_url}"\nquery = """{query}"""\n'
        f'[rules]\npath = "{REPO / "rules"}"\n'
        '[planomatic]\nbase_url = "http://127.0.0.1:9"\n'
        '[orders]\nmode = "dry_run"\n' + extra
    )
    return config


@pytest.mark.parametrize(
    "query",
    [
        ESCAPE,
        "SELECT code AS external_property_id FROM units; DELETE FROM units",
        "SELECT 1 AS external_property_id;\n-- a comment\nDROP TABLE units;",
    ],
)
def test_a_query_of_several_statements_is_refused_at_load(tmp_path: Path, query: str) -> None:
    """The config refuses a query with more than one statement, in one line with its place."""
    config = _config(tmp_path, "sqlite:///pm.db", query)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "source.query: must be a single SELECT statement" in message
    assert message.startswith(f"{config}:")
    assert "\n" not in message


@pytest.mark.parametrize(
    "query",
    [
        "SELECT ';' AS external_property_id FROM units;",
        'SELECT code AS "a;b" FROM units -- trailing; comment',
        "SELECT $$x;y$$ AS external_property_id /* ; */ FROM units;;",
    ],
)
def test_semicolons_inside_literals_and_comments_are_fine(tmp_path: Path, query: str) -> None:
    """Semicolons in strings, quoted names, dollar quotes, comments or at the end are allowed."""
    assert load_settings(_config(tmp_path, "sqlite:///pm.db", query)).source.query == query


def test_check_shows_the_scrubbed_source_error_and_warns_about_open_metrics(
    tmp_path: Path, pg_database: str
) -> None:
    """`check` shows the driver's first line with values masked, and WARNs on non-loopback
    metrics without failing for it."""
    _make_units(pg_database)
    query = "SELECT code AS external_property_id, CAST(beds AS integer) AS bedrooms FROM units"
    # A LIMIT 0 probe does not read rows; a row-level error needs a value in the query itself.
    query = query.replace("CAST(beds AS integer)", "CAST('4821x' AS integer)")
    config = _config(tmp_path, pg_database, query, '[metrics]\nlisten = "0.0.0.0:9464"\n')
    env = {**os.environ, "PROPREADY_CONFIG": str(config)}
    run = [sys.executable, "-m", "propready"]
    upgrade = subprocess.run([*run, "db", "upgrade"], env=env, capture_output=True, check=False)
    assert upgrade.returncode == 0, upgrade.stderr
    check = subprocess.run(
        [*run, "check"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert "FAIL source: source.query: source query failed" in check.stdout
    assert "invalid input syntax for type integer" in check.stdout
    assert "4821" not in check.stdout + check.stderr
    assert "WARN metrics: [metrics] listen = 0.0.0.0:9464 is reachable beyond this host" in (
        check.stdout
    )
