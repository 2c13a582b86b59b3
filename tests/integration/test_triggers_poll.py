"""Readiness detection on a foreign (Yardi-style) schema: every trigger kind, edges, incremental
polls with their overlap window, dirty rows and source outages, on SQLite and PostgreSQL state.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import parse_rule_files
from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.source import create_source_engine
from propready.adapters.store import audit, properties
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import readiness_event
from propready.service import Components, CycleSummary, Pacer, poll, run_cycle
from propready.settings import Settings
from tests.integration.cycle_support import Clock

UNIT = sa.Table(
    "unit",
    sa.MetaData(),
    # Like many PM databases: a surrogate key, and a unit code nothing forces to be unique.
    sa.Column("hmy", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scode", sa.String, nullable=True),
    sa.Column("sstatus", sa.String),
    sa.Column("saddr1", sa.String),
    sa.Column("scity", sa.String),
    sa.Column("sstate", sa.String),
    sa.Column("szipcode", sa.String),
    sa.Column("sunittype", sa.String),
    sa.Column("ibedrooms", sa.Integer),
    sa.Column("dmarketrent", sa.Numeric(14, 2)),
    sa.Column("dtconstructionfinal", sa.String),
    sa.Column("dtupdated", sa.String),
)
QUERY = """
SELECT scode AS external_property_id, sstatus AS status, saddr1 AS street, scity AS city,
       sstate AS state, szipcode AS postal_code, 'single_family' AS property_type,
       ibedrooms AS bedrooms, dmarketrent AS price, dtconstructionfinal AS construction_final_date,
       'rently' AS method_of_access, 'Pat' AS onsite_contact_name,
       '+1 303-555-0100' AS onsite_contact_phone, 'investment_entity_1' AS billing_entity_slug,
       dtupdated AS updated_at
FROM unit
"""
RULES = """
triggers:
  vacant_ready: property.status == "Vacant Unrented Ready"
  construction_final: property.construction_final_date != null
  two_days_after_final: property.construction_final_date + duration("48h") <= now
  rent_changed: has(previous.price) && previous.price != property.price
  final_date_moved: >-
    has(previous.construction_final_date) && previous.construction_final_date != null
    && property.construction_final_date != previous.construction_final_date
rules:
  - id: photos
    triggered_by: [vacant_ready, construction_final, two_days_after_final, rent_changed, final_date_moved]
    services: [{slug: exterior_photos, quantity: 1}]
    duplicate_window_hours: 0
"""
T0 = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)  # 10:00 in Denver


def stamp(at: datetime) -> str:
    return at.isoformat(sep=" ")


def unit(code: str, **values: Any) -> dict[str, Any]:
    row = {
        "scode": code,
        "sstatus": "Occupied",
        "saddr1": "4821 W Mulberry Dr",
        "scity": "Denver",
        "sstate": "CO",
        "szipcode": "80205",
        "sunittype": "SFR",
        "ibedrooms": 3,
        "dmarketrent": 2150,
        "dtconstructionfinal": None,
        "dtupdated": stamp(T0 - timedelta(days=1)),
    }
    row.update(values)
    return row


class Portfolio:
    """The PM database: a Yardi-style `unit` table on SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        UNIT.metadata.drop_all(self.engine)
        UNIT.metadata.create_all(self.engine)

    def add(self, *rows: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            connection.execute(UNIT.insert(), list(rows))

    def set(self, code: str, at: datetime, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                UNIT.update().where(UNIT.c.scode == code).values(dtupdated=stamp(at), **values)
            )

    def raw(self, sql: str) -> None:
        with self.engine.begin() as connection:
            connection.exec_driver_sql(sql)


@pytest.fixture(params=["sqlite-source", "postgresql-source"])
def portfolio(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Portfolio]:
    url = f"sqlite:///{tmp_path / 'pm.db'}"
    if request.param == "postgresql-source":
        url = request.getfixturevalue("pg_database").replace(
            "postgresql://", "postgresql+psycopg://"
        )
    pm = Portfolio(url)
    pm.add(
        unit("U1", dtupdated=stamp(T0 - timedelta(days=3))),
        unit("U2", sstatus="Vacant Unrented Ready", dtupdated=stamp(T0 - timedelta(days=2))),
        unit("U3", sstatus="Under Construction"),
    )
    yield pm
    pm.engine.dispose()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig.default()) as server:
        yield server


@pytest.fixture
def make_parts(state_url: str, sandbox: SandboxServer) -> Iterator[Any]:
    opened: list[Components] = []

    def build(portfolio: Portfolio, rules: str = RULES, **source: Any) -> Components:
        settings = Settings(
            state={"url": state_url},
            source={
                "url": portfolio.url,
                "query": QUERY,
                "timezone": "America/Denver",
                "batch_size": 2,
                **source,
            },
            rules={"path": "."},
            planomatic={
                "base_url": sandbox.url,
                "api_key": "sandbox-key",
                "requests_per_minute": 6000,
            },
        )
        from propready.adapters.planomatic import PlanomaticClient

        catalog = load_catalog()
        parts = Components(
            settings=settings,
            state=create_state_engine(state_url),
            source=create_source_engine(portfolio.url),
            rules=parse_rule_files([("rules.yaml", rules)], catalog),
            catalog=catalog,
            client=PlanomaticClient(sandbox.url, "sandbox-key", timeout_seconds=5),
            pacer=Pacer(6000),
        )
        opened.append(parts)
        return parts

    yield build
    for parts in opened:
        assert parts.client is not None
        parts.client.close()
        parts.state.dispose()
        parts.source.dispose()


def events(parts: Components) -> list[tuple[str, str, int, str]]:
    with parts.state.connect() as connection:
        rows = connection.execute(
            sa.select(
                readiness_event.c.external_property_id,
                readiness_event.c.trigger_name,
                readiness_event.c.edge_seq,
                readiness_event.c.kind,
            ).order_by(readiness_event.c.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def cycle(parts: Components, clock: Clock) -> CycleSummary:
    return run_cycle(parts, clock)


def test_status_reached_fires_on_the_rising_edge_only(
    portfolio: Portfolio, make_parts: Any
) -> None:
    """A status reached fires once; staying there fires nothing; leaving and returning fires again."""
    parts = make_parts(portfolio)
    clock = Clock(T0)
    cycle(parts, clock)
    assert events(parts) == []  # U2 was already ready at first sight
    for status, at in (
        ("Vacant Unrented Ready", 1),
        ("Vacant Unrented Ready", 2),
        ("Occupied", 3),
        ("Vacant Unrented Ready", 4),
    ):
        clock.now = T0 + timedelta(hours=at)
        portfolio.set("U1", clock.now, sstatus=status)
        cycle(parts, clock)
    assert events(parts) == [
        ("U1", "vacant_ready", 1, "rising_edge"),
        ("U1", "vacant_ready", 2, "rising_edge"),
    ]


def test_date_entered_and_date_reached_with_an_offset(
    portfolio: Portfolio, make_parts: Any
) -> None:
    """Entering a date fires at once; "two days after" fires on the first full pass after 48 h."""
    parts = make_parts(portfolio)
    clock = Clock(T0)
    cycle(parts, clock)
    portfolio.set("U3", T0, dtconstructionfinal="2026-11-27")
    cycle(parts, clock)
    assert events(parts) == [("U3", "construction_final", 1, "rising_edge")]
    clock.now = datetime(2026, 11, 29, 6, 59, tzinfo=UTC)  # 23:59 on the 28th in Denver
    cycle(parts, clock)
    assert len(events(parts)) == 1
    clock.now = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)  # midnight on the 29th in Denver
    summary = cycle(parts, clock)
    assert events(parts)[-1] == ("U3", "two_days_after_final", 1, "rising_edge")
    assert summary.unchanged == 2  # the row did not change: only the time-based trigger ran


def test_field_changed_fires_per_change_and_re_arms(portfolio: Portfolio, make_parts: Any) -> None:
    """A rent change fires; the next poll re-arms; the next change fires again."""
    parts = make_parts(portfolio)
    clock = Clock(T0)
    cycle(parts, clock)
    portfolio.set("U1", T0, dmarketrent=2200)
    cycle(parts, clock)
    cycle(parts, clock)
    portfolio.set("U1", T0, dmarketrent=2250)
    cycle(parts, clock)
    assert [e[1:3] for e in events(parts)] == [("rent_changed", 1), ("rent_changed", 2)]


def test_repeated_polls_store_each_edge_once(portfolio: Portfolio, make_parts: Any) -> None:
    """Polling the same data again and again never stores a second event."""
    parts = make_parts(portfolio)
    clock = Clock(T0)
    cycle(parts, clock)
    portfolio.set("U1", T0, sstatus="Vacant Unrented Ready")
    for _ in range(3):
        cycle(parts, clock)
    assert len(events(parts)) == 1


def test_first_sight_can_be_backfilled_later(
    portfolio: Portfolio, make_parts: Any, sandbox: SandboxServer
) -> None:
    """Homes already ready when first seen are ordered by a backfill, once."""
    from propready.service.backfill import backfill

    parts = make_parts(portfolio)
    clock = Clock(T0)
    cycle(parts, clock)
    planned = backfill(parts, clock, dry_run=True)
    assert [(c.external_property_id, c.trigger_name) for c in planned] == [("U2", "vacant_ready")]
    assert events(parts) == []
    done = backfill(parts, clock, dry_run=False)
    assert len(done) == 1
    assert events(parts) == [("U2", "vacant_ready", 1, "backfill")]
    assert backfill(parts, clock, dry_run=False) == []
    cycle(parts, clock)
    assert [o["external_property_id"] for o in sandbox.orders] == ["U2"]


def test_incremental_poll_reads_only_recent_rows_and_respects_the_overlap(
    portfolio: Portfolio, make_parts: Any
) -> None:
    """After a full pass, polls read rows from the checkpoint minus the overlap; late commits count."""
    parts = make_parts(portfolio, cursor_column="updated_at", cursor_overlap_seconds=600)
    clock = Clock(T0)
    first = cycle(parts, clock)
    assert first.full_pass
    assert first.rows == 3
    portfolio.set("U1", T0 + timedelta(minutes=30), sstatus="Vacant Unrented Ready")
    clock.now = T0 + timedelta(hours=1)
    second = cycle(parts, clock)
    assert not second.full_pass
    assert second.rows == 2  # U1, and U3 again: its stamp equals the checkpoint
    # A late commit: stamped 5 minutes before the checkpoint, inside the 10-minute overlap.
    portfolio.set("U3", T0 + timedelta(minutes=25), dtconstructionfinal="2026-11-27")
    third = cycle(parts, clock)
    assert third.rows == 2  # U1 again (overlap, unchanged, skipped) and U3
    assert [e[0:2] for e in events(parts)] == [("U1", "vacant_ready"), ("U3", "construction_final")]
    with parts.state.connect() as connection:
        checkpoint = properties.load_checkpoint(connection, "source")
    assert checkpoint.cursor == stamp(T0 + timedelta(minutes=30))


def test_full_pass_catches_what_the_cursor_missed(portfolio: Portfolio, make_parts: Any) -> None:
    """A change stamped far in the past is invisible to incremental polls and found by a full pass."""
    parts = make_parts(portfolio, cursor_column="updated_at", full_scan_interval_seconds=3600)
    clock = Clock(T0)
    cycle(parts, clock)
    portfolio.set("U2", T0 - timedelta(days=2), sstatus="Occupied")
    portfolio.set("U1", T0 - timedelta(days=2), sstatus="Vacant Unrented Ready")
    clock.now = T0 + timedelta(minutes=5)
    assert not cycle(parts, clock).full_pass
    assert events(parts) == []
    clock.now = T0 + timedelta(hours=1)
    assert cycle(parts, clock).full_pass
    assert events(parts) == [("U1", "vacant_ready", 1, "rising_edge")]


DIRTY = [
    (unit("D1", scode=None), "external_property_id", "no property id"),
    (unit("D2", dtconstructionfinal="31/12/2026"), "construction_final_date", "is not a date"),
    (unit("D3", ibedrooms=-2), "bedrooms", "outside the plausible range"),
    (unit("D4", dmarketrent=250_000_000), "price", "outside the plausible range"),
    (unit("D5", sstate="XX"), "state", "not a US state"),
]


def test_dirty_rows_are_quarantined_once_and_released_when_fixed(
    portfolio: Portfolio, make_parts: Any
) -> None:
    """Each kind of bad row is audited with its column (every row of an id two rows share is
    held); unchanged, it is not audited again."""
    portfolio.add(*[row for row, _, _ in DIRTY], unit("U1B", scode="U1"))
    parts = make_parts(portfolio)
    clock = Clock(T0)
    summary = cycle(parts, clock)
    assert summary.quarantined == len(DIRTY) + 2  # both rows of the repeated id U1
    assert summary.new_properties == 2
    cycle(parts, clock)
    with parts.state.connect() as connection:
        found = audit.query_events(connection, kinds=["source_row_quarantined"])
    reasons = {(e["detail"]["column"], e["external_property_id"]) for e in found}
    assert len(found) == len(DIRTY) + 2  # the second poll audited nothing new
    for row, column, reason in DIRTY:
        assert (column, row["scode"]) in reasons
        assert any(
            reason in e["detail"]["reason"] for e in found if e["detail"]["column"] == column
        )
    assert ("external_property_id", "U1") in reasons  # the duplicated id
    portfolio.set("D2", T0, dtconstructionfinal="2026-12-31")
    cycle(parts, clock)
    with parts.state.connect() as connection:
        released = audit.query_events(connection, kinds=["source_row_released"])
    assert [e["external_property_id"] for e in released] == ["D2"]
    assert ("D2", "construction_final", 1, "first_sight") not in events(parts)


def test_text_that_is_not_utf8_is_quarantined(tmp_path: Path, make_parts: Any) -> None:
    """Invalid UTF-8 in a SQLite source quarantines that row instead of aborting the poll."""
    pm = Portfolio(f"sqlite:///{tmp_path / 'bad.db'}")
    try:
        pm.add(unit("OK1"))
        pm.raw(
            "INSERT INTO unit (scode, sstatus, saddr1, scity, sstate, szipcode, sunittype, ibedrooms, dmarketrent, dtupdated) VALUES ('BAD1', CAST(x'ff' AS TEXT), 'x', 'y', 'CO', '80205', 'SFR', 3, 2000, '2026-11-01')"
        )
        parts = make_parts(pm)
        summary = cycle(parts, Clock(T0))
        with parts.state.connect() as connection:
            (event,) = audit.query_events(connection, kinds=["source_row_quarantined"])
    finally:
        pm.engine.dispose()
    assert summary.new_properties == 1
    assert event["detail"] == {"column": "status", "reason": "text is not valid UTF-8"}


def test_source_outage_is_reported_and_retried_with_backoff(
    tmp_path: Path, make_parts: Any, pg_database: str
) -> None:
    """An unreachable source does not stop the cycle; polls back off, then recover."""
    url = pg_database.replace("postgresql://", "postgresql+psycopg://")
    pm = Portfolio(url)
    pm.add(unit("U1"))
    parts = make_parts(pm)
    pm.raw("ALTER TABLE unit RENAME TO unit_moved")
    clock = Clock(T0)
    failed = cycle(parts, clock)
    assert failed.source_error
    assert "source query failed" in failed.source_error
    clock.now += timedelta(seconds=10)  # inside the backoff: no poll attempted
    assert (
        cycle(parts, clock).source_error == "waiting out the backoff after earlier source failures"
    )
    pm.raw("ALTER TABLE unit_moved RENAME TO unit")
    clock.now += timedelta(seconds=parts.settings.source.poll_interval_seconds)
    recovered = cycle(parts, clock)
    pm.engine.dispose()
    assert recovered.source_error is None
    assert recovered.new_properties == 1
    with parts.state.connect() as connection:
        checkpoint = properties.load_checkpoint(connection, "source")
    assert checkpoint.consecutive_failures == 0
    assert checkpoint.last_error is None


def test_rules_receive_typed_values(portfolio: Portfolio, make_parts: Any) -> None:
    """Dates, numbers and timestamps from text columns reach CEL typed, so rules never parse."""
    rules = """
triggers:
  typed: >-
    property.construction_final_date == timestamp("2026-11-20T00:00:00-07:00")
    && property.price > 2000.5 && property.updated_at < now && property.bedrooms + 1 == 4
rules: []
"""
    parts = make_parts(portfolio, rules=rules)
    portfolio.set("U1", T0 - timedelta(hours=1), dtconstructionfinal="2026-11-20")
    summary = CycleSummary()
    poll(parts, Clock(T0), summary)
    with parts.state.connect() as connection:
        stored = properties.load_properties(connection, ["U1"], with_facts=True)["U1"]
    assert stored.triggers["typed"].is_true


def test_a_poll_already_running_elsewhere_is_not_duplicated(
    portfolio: Portfolio, make_parts: Any, state_url: str
) -> None:
    """A second poller skips while the first holds the poll lock (an advisory lock on
    PostgreSQL, a lock file beside a SQLite database)."""
    parts = make_parts(portfolio)
    with properties.exclusive_poll(parts.state) as first:
        assert first
        summary = cycle(parts, Clock(T0))
    assert summary.poll_skipped
    assert summary.rows == 0
    assert cycle(parts, Clock(T0)).new_properties == 3


def test_a_changed_date_compares_as_a_date_with_its_previous_value(
    portfolio: Portfolio, make_parts: Any
) -> None:
    """`previous` facts come back typed: a moved date fires, an unchanged one does not."""
    parts = make_parts(portfolio)
    clock = Clock(T0)
    portfolio.set("U3", T0, dtconstructionfinal="2026-11-20")
    cycle(parts, clock)
    portfolio.set("U3", T0, sstatus="Vacant Unrented Not Ready")  # the date stays the same
    cycle(parts, clock)
    assert [e[1] for e in events(parts) if e[1] == "final_date_moved"] == []
    portfolio.set("U3", T0, dtconstructionfinal="2026-11-24")
    cycle(parts, clock)
    assert [e[1:3] for e in events(parts) if e[1] == "final_date_moved"] == [
        ("final_date_moved", 1)
    ]
