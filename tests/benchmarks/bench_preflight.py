"""Benchmark: `propready check`'s orders line and `simulate` over a large PostgreSQL PM database.

Measures, on this machine:
  (a) the source query streamed raw with psycopg (server-side cursor): the physical baseline;
  (b) check's orders scan: every row typed, every trigger evaluated, and for each home a rule
      orders, the order built and validated by the vendor contract;
  (c) simulate's scan with the state database consulted for each home a rule orders (an empty,
      migrated PostgreSQL state database);
  (d) the vendor contract alone on 100,000 valid payloads.

    .venv/bin/python tests/benchmarks/bench_preflight.py [--homes 200000] [--keep]

It creates the databases propready_bench_pf_pm and propready_bench_pf_state on 127.0.0.1:5432
and drops them afterwards (unless --keep).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from tests.benchmarks.bench_poll import BUILD, QUERY

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.source import create_source_engine
from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine
from propready.core.vendor_contract import validate_create
from propready.service.preflight import check_orders, simulate_homes
from propready.settings import Settings

ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
PM_DB, STATE_DB = "propready_bench_pf_pm", "propready_bench_pf_state"
REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


def timed(label: str, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{label:<52} {seconds:7.2f} s   peak RSS {rss:5.0f} MB   {result}")
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
    parser = argparse.ArgumentParser()
    parser.add_argument("--homes", type=int, default=200_000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    base = ADMIN.rsplit("/", 1)[0]
    pm_url, state_url = f"{base}/{PM_DB}", f"{base}/{STATE_DB}"
    for name in (PM_DB, STATE_DB):
        admin(f'DROP DATABASE IF EXISTS "{name}"')
        admin(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(pm_url, autocommit=True) as connection:
            connection.execute(BUILD.replace("%(homes)s", str(args.homes)))  # type: ignore[arg-type]
        state = create_state_engine(state_url)
        migrate.upgrade(state)
        settings = Settings(
            state={"url": state_url},
            source={"url": pm_url, "query": QUERY, "timezone": "America/Denver"},
            rules={"path": REPO / "rules"},
        )
        catalog = load_catalog()
        rules = load_rule_set(REPO / "rules", catalog)
        source = create_source_engine(pm_url)
        print(f"{args.homes} homes")
        timed("(a) raw psycopg stream", lambda: raw_stream(pm_url))
        timed(
            "(b) check: orders line (type, decide, plan, validate)",
            lambda: check_orders(settings, rules, catalog, NOW).detail,
        )

        def simulated() -> int:
            homes = simulate_homes(settings, state, source, rules, catalog, NOW)
            return sum(1 for _ in homes)

        timed("(c) simulate with the state database", simulated)
        payload = {
            "external_property_id": "U0000001",
            "billing_entity_slug": "investment_entity_1",
            "services": [{"slug": "photos", "quantity": 25}],
            "property": {"location": {"street": "1 Main", "city": "Denver", "state": "CO",
                                      "postal_code": "80202"}},
            "property_access": {"vacant": True, "method_of_access": "lockbox_code",
                                "access_code": "1234", "lockbox_location": "door",
                                "onsite_contact_name": "Pat", "onsite_contact_phone": "3035550100"},
        }  # fmt: skip
        timed(
            "(d) vendor contract, 100,000 valid payloads",
            lambda: sum(len(validate_create(payload, catalog)) for _ in range(100_000)),
        )
        source.dispose()
        state.dispose()
    finally:
        if not args.keep:
            for name in (PM_DB, STATE_DB):
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
