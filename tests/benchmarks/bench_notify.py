"""Notifications at volume: scanning a burst of audit rows, batching it, and an idle run.

Run by hand (not collected by pytest):
    .venv/bin/python -m tests.benchmarks.bench_notify [--rows 20000] [--idle-runs 20]

For SQLite and PostgreSQL, in a fresh migrated state database: writes --rows audit rows (half
quarantined rows, a quarter orders in `unknown`, a quarter kinds nobody is told about), then
times one notification run that scans them into facts, batches them and delivers the messages to
a loopback JSON receiver, and the median of --idle-runs runs with nothing new (the daemon's
`notify` job every 10 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import sqlalchemy as sa
from tests.integration.notify_support import JsonReceiver

from propready.adapters.store import audit, migrate
from propready.adapters.store.engine import create_state_engine
from propready.core.audit_kinds import AuditKind
from propready.service.notify import run_notifications
from propready.settings import Settings

ADMIN = os.environ.get("PROPREADY_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
T0 = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def fill(engine: sa.Engine, rows: int) -> None:
    with engine.begin() as connection, audit.buffered(connection):
        for n in range(rows):
            kind = n % 4
            if kind < 2:
                audit.record(
                    connection,
                    AuditKind.SOURCE_ROW_QUARANTINED,
                    T0,
                    external_property_id=f"RM-{n}",
                    detail={"column": "bedrooms", "reason": "not a number"},
                )
            elif kind == 2:
                audit.record(
                    connection,
                    AuditKind.ORDER_OUTCOME_UNKNOWN,
                    T0,
                    external_property_id=f"DEN-{n}",
                    external_order_id=f"pr-{n}",
                    detail={"reason": "timeout"},
                )
            else:
                audit.record(connection, AuditKind.ORDER_SENDING, T0, order_id=n, detail={})


def measure(url: str, rows: int, idle_runs: int) -> None:
    engine = create_state_engine(url)
    migrate.upgrade(engine)
    receiver = JsonReceiver()
    settings = Settings(
        state={"url": url},
        source={"url": "sqlite:///unused.db", "query": "SELECT 1"},
        notify={"urls": [receiver.url()], "group_wait_seconds": 0, "digest_at": ""},
    )
    try:
        fill(engine, rows)
        started = time.perf_counter()
        first = run_notifications(engine, settings, "bench", lambda: T0)
        burst = time.perf_counter() - started
        idle = []
        for n in range(idle_runs):
            now = T0 + timedelta(seconds=10 * (n + 1))
            started = time.perf_counter()
            run_notifications(engine, settings, "bench", lambda now=now: now)
            idle.append(time.perf_counter() - started)
        name = engine.dialect.name
        print(
            f"{name:<10} {rows} audit rows -> {first.facts} facts, {first.sent} messages in "
            f"{burst:.2f} s; idle run median {statistics.median(idle) * 1000:.1f} ms"
        )
    finally:
        receiver.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--idle-runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        measure(f"sqlite:///{Path(folder) / 'state.db'}", args.rows, args.idle_runs)
    name = f"propready_bench_notify_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        measure(f"{ADMIN.rsplit('/', 1)[0]}/{name}", args.rows, args.idle_runs)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
