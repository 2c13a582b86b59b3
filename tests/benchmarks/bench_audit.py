"""Audit log at size: 10,000,000 rows in PostgreSQL, the common queries, and the cost of auditing.

Run by hand (not collected by pytest):
    .venv/bin/python -m tests.benchmarks.bench_audit [--rows 10000000] [--homes 200]

1. Creates a dedicated database, migrates it, and bulk-loads --rows audit rows with
   generate_series (5 rows per order story: trigger_fired, rule_matched, order_created,
   order_sending, order_placed; 200,000 homes over two years). The bulk load runs with
   session_replication_role = replica, so the chain trigger is skipped and the loaded rows carry
   placeholder hashes: the load measures size, not hashing. Indexes are rebuilt after the load.
2. Times the history of one home (what `propready explain` reads) and a month of the
   orders-by-day view (plus the same month through audit_order_lines filtered on placed_at).
3. Times real cycles (PM database, sandbox vendor, this 10M-row state database) in which --homes
   homes become ready, with audit.record live (chain trigger on) and with it replaced by a no-op,
   and reports the ratio. Drops the database at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from tests.integration.cycle_support import Clock, PmDatabase, home, make_settings, wired

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import audit, migrate
from propready.adapters.store.engine import create_state_engine
from propready.service import run_cycle

ADMIN = os.environ.get("PROPREADY_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
HOMES = 200_000

LOAD = """
INSERT INTO audit_log (id, at, kind, external_property_id, trigger_name, rule_id, rules_version,
                       event_id, order_id, external_order_id, host, detail, prev_hash, row_hash)
SELECT i + 1,
       timestamptz '2025-01-01 00:00:00+00' + (i / 5) * interval '31.5 seconds'
         + (i % 5) * interval '1 second',
       (ARRAY['trigger_fired','rule_matched','order_created','order_sending','order_placed'])
         [i % 5 + 1],
       'P' || ((i / 5) % {homes}),
       'vacant_ready',
       'rule-' || ((i / 5) % 7),
       'v1',
       i / 5,
       CASE WHEN i % 5 >= 2 THEN i / 5 END,
       CASE WHEN i % 5 >= 2 THEN 'PR-' || (i / 5) END,
       'bench',
       CASE i % 5
         WHEN 2 THEN jsonb_build_object('billing_entity_slug', 'entity_' || ((i / 5) % 5),
                                        'state', 'planned',
                                        'services', jsonb_build_array(
                                          jsonb_build_object('slug', 'photos', 'quantity', 25)))
         WHEN 4 THEN jsonb_build_object('state', 'placed', 'vendor_order_id', i / 5)
         ELSE jsonb_build_object('kind', 'rising_edge')
       END,
       repeat('0', 64), repeat('0', 64)
  FROM generate_series({start}::bigint, {stop}::bigint - 1) AS i
"""


def timed(fn: Callable[[], Any], runs: int = 5) -> tuple[float, float]:
    """(median, max) wall time in milliseconds over `runs` warm runs."""
    fn()  # warm the cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples)


def load(url: str, rows: int) -> float:
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        indexes = connection.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_log'"
            " AND indexname LIKE 'ix_%'"
        ).fetchall()
        for name, _ in indexes:
            connection.execute(f"DROP INDEX {name}")  # type: ignore[arg-type]
        step = 1_000_000
        for first in range(0, rows, step):
            with connection.transaction():
                connection.execute("SET LOCAL session_replication_role = replica")
                connection.execute(
                    LOAD.format(homes=HOMES, start=first, stop=min(rows, first + step))  # type: ignore[arg-type]
                )
            print(f"  loaded {min(rows, first + step):,} rows", flush=True)
        for _, definition in indexes:
            connection.execute(definition)  # type: ignore[arg-type]
        # The load skipped the chain trigger, so the chain head (migration 0005) still says 0:
        # point it at the last loaded row, as the trigger would have.
        connection.execute(
            "UPDATE audit_chain_head SET last_id = (SELECT max(id) FROM audit_log),"
            " last_hash = (SELECT row_hash FROM audit_log ORDER BY id DESC LIMIT 1) WHERE id = 1"
        )
        connection.execute("VACUUM ANALYZE audit_log")
    return time.perf_counter() - start


INSIDE_AUDIT = [0.0]  # seconds spent in audit.record and audit._append during audited cycles
_DEPTH = [0]  # record() calls _append(): count the outermost call only


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _DEPTH[0] += 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                INSIDE_AUDIT[0] += time.perf_counter() - start

    return wrapper


def cycle_seconds(state_url: str, homes: int, rounds: int) -> tuple[list[float], list[float]]:
    """Cycle times with audit rows written, and with audit.record replaced by a no-op.

    The audited cycles also add up the time spent inside the audit writes (record, and the
    buffered _append that writes a batch's rows), a share that a loaded machine disturbs less
    than the difference between two separate cycles.
    """
    live_record = _timed(audit.record)
    live_append = audit._append
    audit._append = _timed(live_append)  # type: ignore[assignment]

    def no_audit(*args: Any, **kwargs: Any) -> None:
        return None

    with_audit: list[float] = []
    without_audit: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        SandboxServer(dataclasses.replace(SandboxConfig.default(), rate_limit=0)) as sandbox,
    ):
        pm = PmDatabase(f"sqlite:///{Path(tmp) / 'pm.db'}")
        codes = [f"B{n:05d}" for n in range(homes * rounds * 2)]
        pm.insert(*(home(code) for code in codes))
        settings = make_settings(state_url, pm.url, sandbox.url)
        # Measure our work, not the vendor's rate limit.
        fast = settings.planomatic.model_copy(update={"requests_per_minute": 1_000_000})
        settings = settings.model_copy(update={"planomatic": fast})
        clock = Clock()
        with wired(settings) as parts:
            run_cycle(parts, clock)  # first sight of every home
            for n in range(rounds * 2):
                batch = codes[n * homes : (n + 1) * homes]
                with pm.engine.begin() as connection:
                    connection.execute(
                        sa.text(
                            "UPDATE homes SET status = 'Vacant Unrented Ready' WHERE code IN :c"
                        ).bindparams(sa.bindparam("c", expanding=True)),
                        {"c": batch},
                    )
                auditing = n % 2 == 0
                audit.record = live_record if auditing else no_audit  # type: ignore[assignment]
                clock.now += timedelta(minutes=5)
                start = time.perf_counter()
                summary = run_cycle(parts, clock)
                elapsed = time.perf_counter() - start
                audit.record = live_record  # type: ignore[assignment]
                assert summary.placed == homes, summary
                (with_audit if auditing else without_audit).append(elapsed)
        pm.close()
    audit._append = live_append  # type: ignore[assignment]
    return with_audit, without_audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--homes", type=int, default=200, help="homes ready per timed cycle")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    name = f"propready_bench_audit_{os.getpid()}"
    base = ADMIN.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    print(f"load average before: {os.getloadavg()}")
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    engine = create_state_engine(url)
    try:
        migrate.upgrade(engine)
        print(f"loading {args.rows:,} audit rows ...", flush=True)
        print(f"load + index + analyze: {load(url, args.rows):.0f} s")
        with engine.connect() as connection:
            size = connection.exec_driver_sql(
                "SELECT pg_size_pretty(pg_total_relation_size('audit_log'))"
            ).scalar_one()
            print(f"audit_log total size: {size}")

            def history() -> None:
                audit.query_events(connection, external_property_id="P12345", limit=1_000_000)

            def month_by_day() -> None:
                connection.exec_driver_sql(
                    "SELECT * FROM audit_orders_by_day"
                    " WHERE day >= DATE '2026-06-01' AND day < DATE '2026-07-01'"
                ).all()

            def month_lines() -> None:
                connection.exec_driver_sql(
                    "SELECT day, billing_entity_slug, service_slug, count(DISTINCT order_id),"
                    " sum(quantity) FROM audit_order_lines"
                    " WHERE placed_at >= '2026-06-01' AND placed_at < '2026-07-01'"
                    " GROUP BY 1, 2, 3"
                ).all()

            rows_one = len(
                audit.query_events(connection, external_property_id="P12345", limit=1_000_000)
            )
            for label, fn, target in (
                (f"history of one home ({rows_one} rows)", history, 50),
                ("a month of audit_orders_by_day (filter on day)", month_by_day, 2000),
                ("the same month via audit_order_lines (filter on placed_at)", month_lines, 2000),
            ):
                median, worst = timed(fn)
                verdict = "OK" if median < target else "OVER"
                print(
                    f"{label}: median {median:.1f} ms, max {worst:.1f} ms (target < {target} ms: {verdict})"
                )
        print(f"cycles with {args.homes} homes becoming ready, {args.rounds} rounds each ...")
        with_audit, without_audit = cycle_seconds(url, args.homes, args.rounds)
        on, off = statistics.median(with_audit), statistics.median(without_audit)
        print(f"cycle with audit: {[round(s, 2) for s in with_audit]} s, median {on:.2f} s")
        print(f"cycle without audit: {[round(s, 2) for s in without_audit]} s, median {off:.2f} s")
        print(f"audit overhead: {100 * (on - off) / off:.1f}% (target < 20%)")
        inside, total = INSIDE_AUDIT[0], sum(with_audit)
        print(
            f"time inside audit writes in the audited cycles: {inside:.2f} s of {total:.2f} s "
            f"({100 * inside / total:.1f}% of the cycle, {100 * inside / (total - inside):.1f}% "
            "on top of the rest)"
        )
        print(f"load average after: {os.getloadavg()}")
    finally:
        engine.dispose()
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
