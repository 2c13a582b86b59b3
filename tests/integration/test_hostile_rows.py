"""Hostile PM rows cost exactly themselves: generated rows with NaN and infinite numbers, control
characters, over-long text, absurd values and shared ids never stop a poll; every good row is
processed and every bad one held, on SQLite and PostgreSQL sources and state databases."""

from __future__ import annotations

import math
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.source import create_source_engine
from propready.adapters.store.engine import create_state_engine
from propready.service import Components, CycleSummary, Pacer, poll
from propready.settings import Settings
from tests.conftest import PG_ADMIN_URL, PG_BASE
from tests.integration.cycle_support import REPO, Clock

UNITS = sa.Table(
    "units",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True),
    sa.Column("code", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("street", sa.Text),
    sa.Column("state", sa.Text),
    sa.Column("notes", sa.Text),
    sa.Column("rent", sa.Float),
    sa.Column("beds", sa.Integer),
)
QUERY = (
    "SELECT code AS external_property_id, status, street, 'Denver' AS city, state, "
    "'80205' AS postal_code, notes, rent AS price, beds AS bedrooms FROM units"
)

# What can be wrong with one row, and the value that makes it so.
HOSTILE: dict[str, tuple[str, Any]] = {
    "nan_price": ("rent", math.nan),
    "infinite_price": ("rent", math.inf),
    "negative_infinite_price": ("rent", -math.inf),
    "absurd_price": ("rent", 5e12),
    "negative_bedrooms": ("beds", -3),
    "control_character": ("street", "12 Elm St\x07"),
    "escape_sequence": ("notes", "\x1b[31mred"),
    "over_long_text": ("notes", "x" * 20_000),
    "over_long_street": ("street", "y" * 300),
    "not_a_state": ("state", "XX"),
    "no_id": ("code", None),
    "blank_id": ("code", "   "),
}
ROWS = st.lists(
    st.one_of(st.just("good"), st.sampled_from(sorted(HOSTILE)), st.just("repeated_id")),
    min_size=1,
    max_size=25,
)


def _rows(kinds: list[str]) -> list[dict[str, Any]]:
    rows = []
    for n, kind in enumerate(kinds):
        row: dict[str, Any] = {
            "n": n,
            "code": f"H{n:03d}",
            "status": "Vacant Unrented Ready" if n % 2 else "Occupied",
            "street": f"{n} Mulberry Dr",
            "state": "CO",
            "notes": "fresh paint",
            "rent": 2150.0 + n,
            "beds": 3,
        }
        if kind in HOSTILE:
            column, value = HOSTILE[kind]
            row[column] = value
        elif kind == "repeated_id" and n > 0:
            row["code"] = "H000"  # the first row's id again
        rows.append(row)
    return rows


def _expected(
    rows: list[dict[str, Any]], kinds: list[str], source_kind: str
) -> tuple[set[str], int]:
    """The ids that must be stored (good, unique), and how many rows must be held."""
    if source_kind == "sqlite":  # SQLite stores a NaN as NULL: that row arrives clean
        kinds = ["good" if kind == "nan_price" else kind for kind in kinds]
    counts = Counter(str(r["code"]).strip() for r in rows if r["code"] and str(r["code"]).strip())
    good = {
        r["code"]
        for r, kind in zip(rows, kinds, strict=True)
        if kind in ("good", "repeated_id") and counts[str(r["code"])] == 1
    }
    return good, len(rows) - len(good)


@pytest.fixture(scope="module")
def pg_source() -> Iterator[str]:
    name = f"propready_hostile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    yield f"{PG_BASE}/{name}".replace("postgresql://", "postgresql+psycopg://")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _poll_once(state_url: str, source_url: str) -> tuple[CycleSummary, set[str], int]:
    settings = Settings(
        state={"url": state_url},
        source={"url": source_url, "query": QUERY, "timezone": "America/Denver", "batch_size": 4},
        rules={"path": REPO / "rules"},
        orders={"mode": "dry_run", "first_sight": "fire"},
    )
    catalog = load_catalog()
    parts = Components(
        settings=settings,
        state=create_state_engine(state_url),
        source=create_source_engine(source_url),
        rules=load_rule_set(REPO / "rules", catalog),
        catalog=catalog,
        client=None,
        pacer=Pacer(50),
    )
    try:
        summary = CycleSummary()
        poll(parts, Clock(), summary, full_pass=True)
        with parts.state.connect() as connection:
            stored = set(
                connection.execute(sa.text("SELECT external_property_id FROM property_state"))
                .scalars()
                .all()
            )
            held = int(
                connection.execute(sa.text("SELECT count(*) FROM source_quarantine")).scalar_one()
            )
    finally:
        parts.state.dispose()
        parts.source.dispose()
    return summary, stored, held


def _fill(source_url: str, rows: list[dict[str, Any]]) -> None:
    engine = sa.create_engine(source_url)
    try:
        UNITS.metadata.drop_all(engine)
        UNITS.metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(UNITS.insert(), rows)
    finally:
        engine.dispose()


@pytest.mark.parametrize("source_kind", ["sqlite", "postgresql"])
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kinds=ROWS)
def test_a_poll_over_hostile_rows_processes_every_good_row(
    source_kind: str,
    kinds: list[str],
    tmp_path: Path,
    sqlite_template: Path,
    pg_source: str,
    state_url: str,
) -> None:
    """Whatever mix of hostile rows the source returns, the poll completes, every good row with
    a unique id is stored, and every other row is held (none stops the batch)."""
    source_url = f"sqlite:///{tmp_path / 'pm.db'}" if source_kind == "sqlite" else pg_source
    rows = _rows(kinds)
    _fill(source_url, rows)
    example_state = state_url
    if state_url.startswith("sqlite"):  # a fresh state per example (PostgreSQL: cleared below)
        path = tmp_path / f"state-{uuid.uuid4().hex[:8]}.db"
        shutil.copy(sqlite_template, path)
        example_state = f"sqlite:///{path}"
    else:
        engine = create_state_engine(state_url)
        with engine.begin() as connection:
            for table in ("readiness_event", "property_state", "source_quarantine"):
                connection.exec_driver_sql(f"DELETE FROM {table}")
            connection.exec_driver_sql("DELETE FROM source_checkpoint")
        engine.dispose()
    summary, stored, held = _poll_once(example_state, source_url)
    good, bad = _expected(rows, kinds, source_kind)
    assert stored == good
    assert summary.quarantined == bad
    assert held >= 1 if bad else held == 0
