"""The bundled demo PM database: a foreign Yardi-flavoured schema and its simulated turnover."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from propready.demo.pm_database import (
    DEMO_SOURCE_QUERY,
    STATUSES,
    DemoChange,
    advance_demo_pm_database,
    create_demo_pm_database,
    describe_demo_pm_database,
)

NOW = datetime(2025, 3, 10, 15, 30, tzinfo=UTC)
READY = "Vacant Unrented Ready"
NOT_READY = "Vacant Unrented Not Ready"
US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH "
    "NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY".split()
)


def units(path: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path)) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM unit ORDER BY scode").fetchall()
    return [dict(row) for row in rows]


def column_types(path: Path, column: str) -> set[str]:
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute(f"SELECT DISTINCT typeof({column}) FROM unit").fetchall()
    return {kind for (kind,) in rows}


@pytest.fixture
def demo_db(tmp_path: Path) -> Path:
    path = tmp_path / "pm.db"
    create_demo_pm_database(path, now=NOW)
    return path


def test_same_seed_and_now_give_the_same_database(tmp_path: Path) -> None:
    """Two databases created with the same seed and now are identical row for row."""
    first, second, other = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    create_demo_pm_database(first, homes=50, seed=3, now=NOW)
    create_demo_pm_database(second, homes=50, seed=3, now=NOW)
    create_demo_pm_database(other, homes=50, seed=4, now=NOW)
    assert units(first) == units(second)
    assert units(first) != units(other)


def test_creates_the_requested_number_of_homes_and_replaces_an_old_file(tmp_path: Path) -> None:
    """The file holds exactly `homes` units, and creating again replaces it."""
    path = tmp_path / "nested" / "pm.db"
    create_demo_pm_database(path, homes=120, now=NOW)
    create_demo_pm_database(path, homes=40, now=NOW)
    assert len(units(path)) == 40
    assert sorted(p.name for p in path.parent.iterdir()) == ["pm.db"]


def test_every_row_satisfies_the_schema_constraints(demo_db: Path) -> None:
    """Every unit has a US state, a 5-digit text ZIP, the access data its method needs, and
    well-formed contacts, sizes, statuses and timestamps."""
    rows = units(demo_db)
    assert len({row["scode"] for row in rows}) == len(rows) == 300
    assert column_types(demo_db, "szipcode") == {"text"}
    for row in rows:
        assert re.fullmatch(r"[A-Z]{3}-\d{5}", row["scode"])
        assert row["sstatus"] in STATUSES
        assert row["sstate"] in US_STATES
        assert re.fullmatch(r"\d{5}", row["szipcode"])
        assert re.fullmatch(r"\d+ ([NSEW] )?[A-Z][A-Za-z ]+ [A-Z][a-z]+", row["saddr1"])
        assert row["sunittype"] in {"SFR", "CONDO", "TOWNHOME", "DUPLEX"}
        assert row["saddr2"] is None or (
            row["sunittype"] != "SFR" and re.fullmatch(r"Unit [A-Z]", row["saddr2"])
        )
        assert 2 <= row["ibedrooms"] <= 5
        assert 1 <= row["dbathrooms"] <= 3.5
        assert (row["dbathrooms"] * 2).is_integer()
        assert 900 <= row["dsqft"] <= 3600
        assert row["dmarketrent"] > 0
        assert abs(row["dlatitude"]) <= 90
        assert abs(row["dlongitude"]) <= 180
        method = row["saccessmethod"]
        assert method in {"lockbox_code", "keypad", "rently"}
        if method in {"lockbox_code", "keypad"}:
            assert re.fullmatch(r"\d{4}", row["slockboxcode"])
        assert (row["slockboxlocation"] is not None) == (method == "lockbox_code")
        assert re.fullmatch(r"\+1 \d{3}-555-01\d{2}", row["sagentphone"])
        assert row["sagentemail"] is None or re.fullmatch(
            r"[a-z]+\.[a-z]+@example\.com", row["sagentemail"]
        )
        assert row["sentity"] in {"investment_entity_1", "investment_entity_2"}
        updated = datetime.fromisoformat(row["dtupdated"])
        assert row["dtupdated"].endswith("+00:00")
        assert NOW - timedelta(days=30) <= updated <= NOW
        if row["sstatus"] == "Under Construction":
            assert row["dtconstructionfinal"] is None
        if row["dtconstructionfinal"] is not None:
            assert datetime.fromisoformat(row["dtconstructionfinal"]).date() < NOW.date()


def test_starting_portfolio_is_mostly_occupied_with_some_of_every_stage(demo_db: Path) -> None:
    """At the start most homes are occupied, ~5% ready, ~8% under construction, and a few
    already carry a past construction final date."""
    counts = describe_demo_pm_database(demo_db)
    assert counts["Occupied"] > 150
    assert counts["Notice Unrented"] > 0
    assert counts[NOT_READY] > 0
    assert 10 <= counts[READY] <= 20
    assert 18 <= counts["Under Construction"] <= 30
    assert any(row["dtconstructionfinal"] is not None for row in units(demo_db))


def test_the_source_query_reads_the_schema_through_aliases(demo_db: Path) -> None:
    """DEMO_SOURCE_QUERY runs through SQLAlchemy and returns propready's field names."""
    engine = sa.create_engine(f"sqlite:///{demo_db}")
    try:
        with engine.connect() as connection:
            result = connection.execute(sa.text(DEMO_SOURCE_QUERY))
            columns = list(result.keys())
            rows = [row._asdict() for row in result]
    finally:
        engine.dispose()
    assert {
        "external_property_id", "status", "street", "street2", "city", "state", "postal_code",
        "latitude", "longitude", "property_type", "bedrooms", "bathrooms", "square_footage",
        "price", "vacant", "construction_final_date", "method_of_access", "access_code",
        "lockbox_location", "onsite_contact_name", "onsite_contact_phone",
        "onsite_contact_email", "billing_entity_slug", "unit_type", "updated_at",
    } <= set(columns)  # fmt: skip
    assert len(rows) == 300
    for row in rows:
        assert row["property_type"] in {"single_family", "condo_townhouse", "duplex_townhouse"}
        # Nobody lives in a home under construction either: only tenants make it occupied.
        assert row["vacant"] == (0 if row["status"] in ("Occupied", "Notice Unrented") else 1)


def test_a_step_makes_homes_ready_enters_a_final_date_and_bumps_updated(demo_db: Path) -> None:
    """One step moves at least 3 homes to Vacant Unrented Ready and enters at least 1
    construction final date, stamping exactly the changed rows with now."""
    before = {row["scode"]: row for row in units(demo_db)}
    later = NOW + timedelta(hours=1)
    changes = advance_demo_pm_database(demo_db, step=1, now=later)
    after = {row["scode"]: row for row in units(demo_db)}

    ready = [c for c in changes if c.field == "status" and c.new == READY]
    finals = [c for c in changes if c.field == "construction_final_date"]
    assert len(ready) >= 3
    assert all(c.old == NOT_READY for c in ready)
    assert finals
    assert all(c.old is None and c.new == "2025-03-10" for c in finals)
    assert len(changes) == 8
    assert changes == sorted(changes, key=lambda c: (c.external_property_id, c.field))

    changed = {c.external_property_id for c in changes}
    assert len(changed) == len(changes), "a home changes at most once per step"
    for change in changes:
        row = after[change.external_property_id]
        column = "sstatus" if change.field == "status" else "dtconstructionfinal"
        assert before[change.external_property_id][column] == change.old
        assert row[column] == change.new
        assert row["dtupdated"] == "2025-03-10T16:30:00+00:00"
    assert all(after[scode] == before[scode] for scode in before.keys() - changed)


def test_steps_are_deterministic_for_a_seed(tmp_path: Path) -> None:
    """The same database advanced with the same seed and steps changes the same homes."""

    def run(path: Path) -> list[list[DemoChange]]:
        create_demo_pm_database(path, homes=80, now=NOW)
        return [
            advance_demo_pm_database(path, step=step, now=NOW + timedelta(hours=step))
            for step in range(1, 6)
        ]

    assert run(tmp_path / "a.db") == run(tmp_path / "b.db")


def test_every_step_keeps_the_minimums_while_candidates_remain(demo_db: Path) -> None:
    """Each step makes min(3, candidates) homes ready and enters a final date while any
    Under Construction home still lacks one."""
    for step in range(1, 41):
        not_ready = describe_demo_pm_database(demo_db)[NOT_READY]
        awaiting = sum(
            1
            for row in units(demo_db)
            if row["sstatus"] == "Under Construction" and row["dtconstructionfinal"] is None
        )
        changes = advance_demo_pm_database(demo_db, step=step, now=NOW + timedelta(hours=step))
        ready = sum(1 for c in changes if c.new == READY)
        finals = sum(1 for c in changes if c.field == "construction_final_date")
        assert ready >= min(3, not_ready)
        assert finals == min(1, awaiting)


def test_repeated_steps_let_ready_homes_fall_back_and_fire_again(demo_db: Path) -> None:
    """Over repeated steps a ready home is leased or occupied (its trigger re-arms), and some
    home eventually becomes ready a second time."""
    fell_back: set[str] = set()
    ready_again: set[str] = set()
    for step in range(1, 81):
        for change in advance_demo_pm_database(demo_db, step=step, now=NOW + timedelta(hours=step)):
            if change.old == READY:
                assert change.new in {"Vacant Rented Ready", "Occupied"}
                fell_back.add(change.external_property_id)
            elif change.new == READY and change.external_property_id in fell_back:
                ready_again.add(change.external_property_id)
        if step == 1:
            assert fell_back, "the first step already lets a ready home fall back"
    assert ready_again


def test_describe_counts_sum_to_the_row_count(demo_db: Path) -> None:
    """The status counts list every known status and add up to the number of units."""
    assert sum(describe_demo_pm_database(demo_db).values()) == 300
    advance_demo_pm_database(demo_db, step=1, now=NOW)
    counts = describe_demo_pm_database(demo_db)
    assert list(counts) == list(STATUSES)
    assert sum(counts.values()) == 300


def test_now_must_be_timezone_aware(tmp_path: Path) -> None:
    """A naive now is refused rather than silently read as local time."""
    with pytest.raises(ValueError, match="timezone-aware"):
        create_demo_pm_database(tmp_path / "pm.db", now=datetime(2025, 3, 10))
