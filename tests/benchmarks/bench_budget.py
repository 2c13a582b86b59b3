"""Benchmark: what budgets add to deciding 1,000 readiness events (PostgreSQL state database).

For each round, the same incremental poll runs twice on fresh state databases, once with the
shipped rules and once with the same rules plus two budgets that every order falls under (one
per billing entity and month, one for all entities per day; large enough to admit every order,
so both runs insert the same 1,000 orders). The PM database has `--homes` homes over ten billing
entities; `--changes` of them turn "Vacant Unrented Ready" before the timed poll (live mode,
nothing sent: the poll decides and writes the outbox). Each round runs each variant `--repeat`
times, interleaved, and compares the fastest runs, by wall clock and by this process's CPU
time (which other load on a shared machine disturbs less; the database's own work is then left
out). It also times `check_and_lock` alone, 1,000 calls in one transaction (the state of the
last run, rolled back), against the per-event decision time. Target (issue 15): the budget check
adds less than 10 % to the poll's decision time.

    .venv/bin/python tests/benchmarks/bench_budget.py [--homes 20000] [--changes 1000]
        [--rounds 2] [--repeat 3]

It creates the databases propready_bench_budget_pm and propready_bench_budget_state on
127.0.0.1:5432 and drops them afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.source import create_source_engine
from propready.adapters.store import migrate
from propready.adapters.store.budgets import check_and_lock
from propready.adapters.store.engine import create_state_engine
from propready.core.planning import OrderPlan
from propready.service import Components, CycleSummary, Pacer, poll
from propready.settings import Settings

ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
PM_DB, STATE_DB = "propready_bench_budget_pm", "propready_bench_budget_state"
PM_URL = f"postgresql://root@127.0.0.1:5432/{PM_DB}"
STATE_URL = f"postgresql+psycopg://root@127.0.0.1:5432/{STATE_DB}"
REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
BUDGETS = """\
budgets:
  - {name: per-entity-month, billing_entity_slug: "*", period: month, max_orders: 1000000,
     max_spend_usd: 100000000}
  - {name: company-day, period: day, max_orders: 1000000, when_exceeded: skip}
"""

QUERY = """
SELECT scode AS external_property_id, sstatus AS status, saddr1 AS street, scity AS city,
       sstate AS state, szipcode AS postal_code, 'single_family' AS property_type,
       ibedrooms AS bedrooms, saccessmethod AS method_of_access, slockboxcode AS access_code,
       slockboxlocation AS lockbox_location, sagentname AS onsite_contact_name,
       sagentphone AS onsite_contact_phone, sentity AS billing_entity_slug,
       dtupdated AS updated_at
FROM unit
"""
BUILD = """
DROP TABLE IF EXISTS unit;
CREATE TABLE unit (
  hmy bigint PRIMARY KEY, scode text NOT NULL, sstatus text NOT NULL, saddr1 text, scity text,
  sstate text, szipcode text, ibedrooms int, saccessmethod text, slockboxcode text,
  slockboxlocation text, sagentname text, sagentphone text, sentity text,
  dtupdated timestamptz NOT NULL);
INSERT INTO unit
SELECT g, 'U' || lpad(g::text, 7, '0'), 'Occupied', (100 + g % 9800)::text || ' W Mulberry Dr',
       'Denver', 'CO', lpad((80200 + g % 99)::text, 5, '0'), 2 + g % 4, 'lockbox_code',
       lpad((g % 10000)::text, 4, '0'), 'Front door', 'Pat Leasing', '+1 303-555-0100',
       'entity_' || (g % 10), TIMESTAMPTZ '2026-10-01 00:00:00+00'
FROM generate_series(1, {homes}) AS g;
CREATE INDEX unit_dtupdated ON unit (dtupdated);
ANALYZE unit;
"""


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


def decide_once(rules_path: Path, homes: int, changes: int) -> tuple[float, float, CycleSummary]:
    """A fresh state and PM database, a first full pass, then the timed incremental poll."""
    for name in (PM_DB, STATE_DB):
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin(f'CREATE DATABASE "{name}"')
    with psycopg.connect(PM_URL, autocommit=True) as connection:
        connection.execute(BUILD.format(homes=homes))  # type: ignore[arg-type]
    state = create_state_engine(STATE_URL)
    migrate.upgrade(state)
    settings = Settings(
        state={"url": STATE_URL},
        source={
            "url": PM_URL,
            "query": QUERY,
            "cursor_column": "updated_at",
            "timezone": "America/Denver",
            "batch_size": 5000,
        },
        rules={"path": rules_path},
        orders={"mode": "live"},
    )
    catalog = load_catalog()
    source = create_source_engine(PM_URL)
    parts = Components(
        settings=settings,
        state=state,
        source=source,
        rules=load_rule_set(rules_path, catalog),
        catalog=catalog,
        client=None,  # nothing is sent: the poll decides and writes the outbox
        pacer=Pacer(50),
    )
    try:
        poll(parts, lambda: NOW, CycleSummary(), full_pass=True)  # first sight: nothing fires
        with psycopg.connect(PM_URL, autocommit=True) as connection:
            connection.execute(  # type: ignore[call-overload]
                "UPDATE unit SET sstatus = 'Vacant Unrented Ready', dtupdated = %s "
                "WHERE hmy IN (SELECT hmy FROM unit ORDER BY hmy LIMIT %s)",
                (NOW - timedelta(minutes=1), changes),
            )
        summary = CycleSummary()
        started, cpu_started = time.perf_counter(), time.process_time()
        poll(parts, lambda: NOW, summary, full_pass=False)
        return time.perf_counter() - started, time.process_time() - cpu_started, summary
    finally:
        state.dispose()
        source.dispose()


def check_cost(rules_path: Path, calls: int) -> tuple[float, float]:
    """Seconds per budgets.check_and_lock call in one transaction of `calls` plans (rolled back):
    the first call of a batch (locks and a recount), and the mean of the rest."""
    state = create_state_engine(STATE_URL)
    budgets = load_rule_set(rules_path, load_catalog()).budgets
    zone = ZoneInfo("America/Denver")
    plans = [
        OrderPlan(f"pr-cost-{n}", f"C{n}", f"entity_{n % 10}", {}, 72, False, 30000)
        for n in range(calls + 1)
    ]
    try:
        with state.connect() as connection, connection.begin() as transaction:
            started = time.perf_counter()
            check_and_lock(connection, plans[0], budgets, NOW, zone)
            first = time.perf_counter() - started
            started = time.perf_counter()
            for plan in plans[1:]:
                check_and_lock(connection, plan, budgets, NOW, zone)
            rest = (time.perf_counter() - started) / calls
            transaction.rollback()
    finally:
        state.dispose()
    return first, rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--homes", type=int, default=20_000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant per round")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-budget-"))
    plain, budgeted = folder / "plain", folder / "budgeted"
    for path in (plain, budgeted):
        path.mkdir()
        shutil.copy(REPO / "rules" / "readiness.yaml", path)
    (budgeted / "budgets.yaml").write_text(BUDGETS)
    try:
        for round_number in range(1, args.rounds + 1):
            # Interleaved, and alternating which variant goes first, so neither is favoured by
            # warm-up or by other load on the machine; the fastest of each variant counts.
            variants = [("no budgets", plain), ("2 budgets", budgeted)]
            if round_number % 2 == 0:
                variants.reverse()
            seconds: dict[str, list[float]] = {label: [] for label, _ in variants}
            cpu: dict[str, list[float]] = {label: [] for label, _ in variants}
            for _ in range(args.repeat):
                for label, path in variants:
                    elapsed, cpu_seconds, summary = decide_once(path, args.homes, args.changes)
                    seconds[label].append(elapsed)
                    cpu[label].append(cpu_seconds)
                    print(
                        f"round {round_number} {label:<11} {elapsed:6.3f} s wall "
                        f"{cpu_seconds:6.3f} s cpu  events={summary.events} "
                        f"orders={summary.orders_created} held={summary.budget_held} "
                        f"skipped={summary.budget_skipped}"
                    )
            first, rest = check_cost(budgeted, args.changes)
            per_event = min(seconds["no budgets"]) / args.changes
            print(
                f"round {round_number} check_and_lock: first of a batch {first * 1e3:.2f} ms, "
                f"then {rest * 1e6:.0f} us per event = {rest / per_event * 100:.1f} % of the "
                f"{per_event * 1e3:.2f} ms an event takes to decide without budgets"
            )
            for kind, samples in (("wall", seconds), ("cpu", cpu)):
                none, budgets = min(samples["no budgets"]), min(samples["2 budgets"])
                ratio = budgets / none
                print(
                    f"round {round_number} fastest {kind}: no budgets {none:.3f} s, 2 budgets "
                    f"{budgets:.3f} s, ratio {ratio:5.3f} ({(ratio - 1) * 100:+.1f} %; "
                    "target < +10 %)"
                )
    finally:
        shutil.rmtree(folder)
        for name in (PM_DB, STATE_DB):
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
