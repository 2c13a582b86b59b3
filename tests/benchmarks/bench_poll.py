"""Benchmark: readiness detection over a 1,000,000-home PostgreSQL PM database.

Measures, on this machine:
  (d) the source query streamed raw with psycopg (server-side cursor), nothing else done: the
      physical baseline;
  (a) propready's first full pass (every home new: typed, evaluated, stored);
  (b) a steady-state full pass with nothing changed;
  (c) an incremental poll after 1,000 homes changed;
and the process's peak RSS after each. Targets (issue 3): (b) within 3x of (d); (c) under 2 s;
(a) within 10x of (d); peak RSS under 300 MB.

    .venv/bin/python tests/benchmarks/bench_poll.py [--homes 1000000] [--keep]

It creates the databases propready_bench_pm and propready_bench_state on 127.0.0.1:5432 and
drops them afterwards (unless --keep).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.source import create_source_engine
from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine
from propready.service import Components, CycleSummary, Pacer, poll
from propready.settings import Settings

ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
PM_DB, STATE_DB = "propready_bench_pm", "propready_bench_state"
REPO = Path(__file__).resolve().parents[2]

QUERY = """
SELECT scode AS external_property_id, sstatus AS status, saddr1 AS street, saddr2 AS street2,
       scity AS city, sstate AS state, szipcode AS postal_code, dlatitude AS latitude,
       dlongitude AS longitude, 'single_family' AS property_type, ibedrooms AS bedrooms,
       dbathrooms AS bathrooms, dsqft AS square_footage, dmarketrent AS price,
       dtconstructionfinal AS construction_final_date, saccessmethod AS method_of_access,
       slockboxcode AS access_code, slockboxlocation AS lockbox_location,
       sagentname AS onsite_contact_name, sagentphone AS onsite_contact_phone,
       sentity AS billing_entity_slug, dtupdated AS updated_at
FROM unit
"""

BUILD = """
CREATE TABLE unit (
  hmy bigint PRIMARY KEY, scode text NOT NULL, sstatus text NOT NULL, saddr1 text, saddr2 text,
  scity text, sstate text, szipcode text, dlatitude numeric(9,6), dlongitude numeric(9,6),
  ibedrooms int, dbathrooms numeric(3,1), dsqft int, dmarketrent numeric(10,2),
  dtconstructionfinal date, saccessmethod text, slockboxcode text, slockboxlocation text,
  sagentname text, sagentphone text, sentity text, dtupdated timestamptz NOT NULL);
INSERT INTO unit
SELECT g, 'U' || lpad(g::text, 7, '0'),
       (ARRAY['Occupied','Occupied','Occupied','Notice Unrented','Vacant Unrented Not Ready',
              'Vacant Unrented Ready','Under Construction'])[1 + g % 7],
       (100 + g % 9800)::text || ' W Mulberry Dr', NULL, 'Denver', 'CO',
       lpad((80200 + g % 99)::text, 5, '0'), 39.7 + (g % 1000) / 10000.0,
       -104.9 - (g % 1000) / 10000.0, 2 + g % 4, 1 + (g % 5) * 0.5, 900 + g % 2700,
       1500 + g % 2500,
       CASE WHEN g % 7 = 6 THEN NULL ELSE DATE '2024-01-01' + (g % 600) END,
       'lockbox_code', lpad((g % 10000)::text, 4, '0'), 'Front door', 'Pat Leasing',
       '+1 303-555-0100', 'investment_entity_1',
       TIMESTAMPTZ '2026-10-01 00:00:00+00' + (g % 86400) * INTERVAL '1 second'
FROM generate_series(1, %(homes)s) AS g;
CREATE INDEX unit_dtupdated ON unit (dtupdated);
ANALYZE unit;
"""


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    print(
        f"{label:<44} {seconds:8.2f} s   peak RSS {rss_mb():6.0f} MB   {result if result is not None else ''}"
    )
    return seconds


def raw_stream(url: str) -> int:
    rows = 0
    with psycopg.connect(url) as connection, connection.cursor(name="raw") as cursor:
        cursor.itersize = 5000
        cursor.execute(QUERY)  # type: ignore[arg-type]
        for _ in cursor:
            rows += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--homes", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args()

    for name in (PM_DB, STATE_DB):
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin(f'CREATE DATABASE "{name}"')
    pm_url = f"postgresql://root@127.0.0.1:5432/{PM_DB}"
    state_url = f"postgresql+psycopg://root@127.0.0.1:5432/{STATE_DB}"
    started = time.perf_counter()
    with psycopg.connect(pm_url, autocommit=True) as connection:
        connection.execute(BUILD.replace("%(homes)s", str(args.homes)))  # type: ignore[arg-type]
    print(f"built {args.homes:,} homes in {time.perf_counter() - started:.1f} s")

    state = create_state_engine(state_url)
    migrate.upgrade(state)
    settings = Settings(
        state={"url": state_url},
        source={
            "url": pm_url,
            "query": QUERY,
            "cursor_column": "updated_at",
            "timezone": "America/Denver",
            "batch_size": 5000,
        },
        rules={"path": REPO / "rules"},
        orders={"mode": "dry_run"},
    )
    catalog = load_catalog()
    source = create_source_engine(pm_url)
    parts = Components(
        settings=settings,
        state=state,
        source=source,
        rules=load_rule_set(REPO / "rules", catalog),
        catalog=catalog,
        client=None,
        pacer=Pacer(50),
    )
    now = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    clock = lambda: now  # noqa: E731 - the benchmark's frozen clock

    def run(full_pass: bool) -> str:
        summary = CycleSummary()
        poll(parts, clock, summary, full_pass=full_pass)
        return f"rows={summary.rows} new={summary.new_properties} changed={summary.changed} events={summary.events}"

    try:
        raw = timed("(d) raw psycopg stream (baseline)", lambda: raw_stream(pm_url))
        first = timed("(a) first full pass", lambda: run(True))
        steady = timed("(b) steady-state full pass, nothing changed", lambda: run(True))
        with psycopg.connect(pm_url, autocommit=True) as connection:
            connection.execute(  # type: ignore[call-overload]
                "UPDATE unit SET sstatus = 'Vacant Unrented Ready', dtupdated = %s "
                "WHERE hmy IN (SELECT hmy FROM unit WHERE sstatus = 'Occupied' ORDER BY hmy LIMIT %s)",
                (now - timedelta(minutes=1), args.changes),
            )
        incremental = timed(
            f"(c) incremental poll after {args.changes:,} changes", lambda: run(False)
        )
        raw_again = timed("(d) raw psycopg stream again", lambda: raw_stream(pm_url))
        baseline = min(raw, raw_again)
        print()
        print(f"first pass / raw      = {first / baseline:5.2f}x  (target <= 10x)")
        print(f"steady pass / raw     = {steady / baseline:5.2f}x  (target <= 3x)")
        print(f"incremental ({args.changes} changes) = {incremental:5.2f} s   (target <= 2 s)")
        print(f"peak RSS              = {rss_mb():5.0f} MB  (target < 300 MB)")
    finally:
        state.dispose()
        source.dispose()
        if not args.keep:
            for name in (PM_DB, STATE_DB):
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
