"""Benchmark: the web console's pages at size: p95 server time per page on PostgreSQL.

Goal (issue 16): with 100,000 orders and 10,000,000 audit rows, each page's p95 < 200 ms
(paginated, indexed). Run by hand (not collected by pytest); the full size takes a while to
load, so try it small first:

    .venv/bin/python -m tests.benchmarks.bench_console --orders 2000 --audit-rows 50000
    .venv/bin/python -m tests.benchmarks.bench_console              # 100,000 and 10,000,000
    .venv/bin/python -m tests.benchmarks.bench_console --keep       # then --reuse NAME: no reload

1. Creates a dedicated database, migrates it, bulk-loads the audit rows exactly as
   bench_audit does (chain trigger skipped, placeholder hashes) and the orders with
   generate_series (mostly placed, some awaiting approval and unknown; 200,000 homes, 5
   billing entities, 7 rules), then VACUUM ANALYZE.
2. Serves the real console (uvicorn on loopback, as `propready serve` does), logs in, and
   requests each page --runs times after a warm-up, timing each answer whole (the client is
   on the same host: this is the server's time plus a loopback round trip).
3. Prints p50/p95/max per page and OK/OVER against 200 ms; drops the database at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from tests.benchmarks.bench_audit import HOMES, load
from tests.integration.console_support import PASSWORDS, SESSION_SECRET, csrf_of

from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine
from propready.console.app import Console
from propready.receiver.server import Listener, ReceiverServer
from propready.service.console_users import add_user
from propready.settings import Settings
from propready.wiring import console_deps

ADMIN = os.environ.get("PROPREADY_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parents[2]
TARGET_MS = 200.0

ORDERS = """
INSERT INTO orders (id, external_order_id, external_property_id, event_id, rule_id, rules_version,
                    billing_entity_slug, state, vendor_status, vendor_order_id, payload,
                    created_at, window_end, updated_at, attempts, estimated_price_cents,
                    price_estimated, budget_day, delivered_at)
SELECT i + 1,
       'PR-' || i,
       'P' || (i % {homes}),
       NULL,
       'rule-' || (i % 7),
       'v1',
       'entity_' || (i % 5),
       CASE WHEN i % 97 = 0 THEN 'awaiting_approval' WHEN i % 89 = 0 THEN 'unknown'
            ELSE 'placed' END,
       CASE WHEN i % 97 = 0 OR i % 89 = 0 THEN NULL ELSE 'completed' END,
       CASE WHEN i % 97 = 0 OR i % 89 = 0 THEN NULL ELSE (100000 + i)::text END,
       jsonb_build_object('external_order_id', 'PR-' || i,
                          'property_access', jsonb_build_object('method_of_access',
                                                                'lockbox_code',
                                                                'access_code', '4711')),
       timestamptz '2025-01-01 00:00:00+00' + i * interval '5 minutes',
       timestamptz '2025-01-04 00:00:00+00' + i * interval '5 minutes',
       timestamptz '2025-01-01 00:00:00+00' + i * interval '5 minutes',
       1,
       30000,
       false,
       (date '2025-01-01' + (i * 5 / 1440)),
       CASE WHEN i % 97 = 0 OR i % 89 = 0 THEN NULL
            ELSE timestamptz '2025-01-03 00:00:00+00' + i * interval '5 minutes' END
  FROM generate_series(0, {orders} - 1) AS i
"""


def load_orders(url: str, count: int) -> float:
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(ORDERS.format(homes=HOMES, orders=count))  # type: ignore[arg-type]
        connection.execute(
            "SELECT setval(pg_get_serial_sequence('orders', 'id'), (SELECT max(id) FROM orders))"
        )
        connection.execute("VACUUM ANALYZE orders")
    return time.perf_counter() - start


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--audit-rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the database (name printed)")
    parser.add_argument("--reuse", metavar="NAME", help="a database kept by --keep: skip loading")
    args = parser.parse_args()
    name = args.reuse or f"propready_bench_console_{os.getpid()}"
    url = f"{ADMIN.rsplit('/', 1)[0]}/{name}"
    print(f"load average before: {os.getloadavg()}")
    if not args.reuse:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    engine = create_state_engine(url)
    try:
        now = datetime.now(UTC)
        if not args.reuse:
            migrate.upgrade(engine)
            print(f"loading {args.audit_rows:,} audit rows ...", flush=True)
            print(f"audit load + index + analyze: {load(url, args.audit_rows):.0f} s")
            print(f"orders load: {load_orders(url, args.orders):.1f} s ({args.orders:,} orders)")
            add_user(engine, "alice", "approver", PASSWORDS["alice"], by="bench", now=now)
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(
                state={"url": url},
                source={
                    "url": f"sqlite:///{folder}/pm.db",
                    "query": "SELECT 'x' AS external_property_id",
                },
                rules={"path": REPO / "rules"},
                console={"listen": "127.0.0.1:0", "session_secret": SESSION_SECRET},
            )
            console = Console(replace(console_deps(settings, engine), now=lambda: now))
            listener = Listener(
                "console", "console.listen", "127.0.0.1:0", console.app(), proxy_headers=False
            )
            gc.freeze()  # as `propready serve` does once it has started
            with ReceiverServer([listener]) as server:
                base = server.urls()["console"]
                with httpx.Client(base_url=base, timeout=60) as client:
                    token = csrf_of(client.get("/login"))
                    client.post(
                        "/login",
                        data={"csrf_token": token, "name": "alice", "password": PASSWORDS["alice"]},
                    )
                    middle = args.orders // 2
                    pages = [
                        "/",
                        "/orders",
                        "/orders?state=awaiting_approval",
                        "/orders?state=placed&entity=entity_3",
                        f"/orders?rule=rule-2&before={middle}",
                        "/orders?since=2025-03-01&until=2025-03-08",
                        f"/orders/PR-{middle}",
                        f"/homes/P{middle % HOMES}",
                        "/deliveries",
                        "/deliveries?entity=entity_3",
                        "/deliveries?since=2025-03-01&until=2025-03-08",
                        "/spend",
                        "/rules",
                        "/audit",
                        "/audit?kind=order_placed",
                        f"/audit?property=P{middle % HOMES}",
                        f"/audit?order=PR-{middle}",
                        "/audit?since=2025-06-01&until=2025-06-02",
                        f"/audit.csv?property=P{middle % HOMES}",
                    ]
                    print(f"{'page':<48} {'p50':>8} {'p95':>8} {'max':>8}")
                    for path in pages:
                        answer = client.get(path)
                        assert answer.status_code == 200, (path, answer.status_code)
                        samples = []
                        for _ in range(args.runs):
                            start = time.perf_counter()
                            client.get(path).raise_for_status()
                            samples.append((time.perf_counter() - start) * 1000)
                        p95 = percentile(samples, 0.95)
                        verdict = "OK" if p95 < TARGET_MS else "OVER"
                        print(
                            f"{path[:48]:<48} {statistics.median(samples):7.1f}ms "
                            f"{p95:7.1f}ms {max(samples):7.1f}ms  {verdict}",
                            flush=True,
                        )
        print(f"load average after: {os.getloadavg()}")
    finally:
        engine.dispose()
        if args.keep or args.reuse:
            print(f"kept database {name} (--reuse {name}; drop it when done)")
        else:
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
