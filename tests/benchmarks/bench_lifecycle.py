"""Benchmark: the order lifecycle after the webhook receiver (issue 13).

1. ack -> order state: deliveries are posted to the real receiver (the listener `propready serve`
   builds) at a steady rate while the apply step runs on the daemon's default interval
   ([daemon] apply_news_interval_seconds, 0.5 s); for each delivery, the time from its 2xx to
   the commit that applied it (orders.vendor_news_at, stamped with the apply's clock). Goal:
   p95 < 1 s.
2. Reconciliation requests for OPEN open orders with webhooks flowing: three simulated days of
   status_sync runs (every 900 s, at most 100 orders each) over orders that get news every 2 to
   12 hours, except a `--silent` share that gets none; the retrieves counted against the
   vendor's limit (50/min = 72,000/day). Goal: <= 10% of the rate limit. (Pacing at sync_share
   is tested in tests/integration/test_reconcile.py; here the clock is simulated.)

    .venv/bin/python tests/benchmarks/bench_lifecycle.py --state sqlite --deliveries 200 --open 2000
    .venv/bin/python tests/benchmarks/bench_lifecycle.py --state postgresql
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

from propready.adapters.catalog_file import load_catalog
from propready.adapters.planomatic import PlanomaticClient
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import orders
from propready.receiver.metrics import ServeMetrics
from propready.receiver.server import ReceiverServer
from propready.receiver.tokens import TokenChecker
from propready.service import Components, CycleSummary, Pacer
from propready.service.status_sync import reconcile_statuses
from propready.service.vendor_news import Applier
from propready.settings import Settings
from propready.wiring import webhook_listener

REPO = Path(__file__).resolve().parents[2]
TOKEN = "bench-token-0123456789abcdefghijkl"
PG_ADMIN = os.environ.get("PROPREADY_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
VENDOR_LIMIT_PER_DAY = 50 * 60 * 24
DAYS = 3


def state_database(kind: str, folder: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{folder / 'state.db'}", None
    name = f"propready_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}", name


def drop(name: str | None) -> None:
    if name is not None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def insert_open_orders(engine: sa.Engine, count: int, now: datetime) -> None:
    rows = [
        {
            "external_order_id": f"pr-bench-{i}",
            "external_property_id": f"BENCH-{i:06d}",
            "billing_entity_slug": "investment_entity_1",
            "state": "placed",
            "vendor_status": "ordered",
            "vendor_order_id": str(100000 + i),
            "payload": {},
            "created_at": now - timedelta(days=2),
            "window_end": now - timedelta(days=2),
            "updated_at": now - timedelta(days=2),
        }
        for i in range(count)
    ]
    with engine.begin() as connection:
        for start in range(0, count, 1000):
            connection.execute(orders.insert(), rows[start : start + 1000])


def components(state_url: str, engine: sa.Engine, sandbox_url: str | None) -> Components:
    settings = Settings(
        state={"url": state_url},
        source={"url": "sqlite://", "query": "SELECT 1 AS external_property_id"},
        rules={"path": REPO / "rules"},
        planomatic={
            "base_url": sandbox_url or "http://127.0.0.1:9",
            "api_key": "sandbox-key",
            "requests_per_minute": 6000,
        },
    )
    catalog = load_catalog(None)
    client = PlanomaticClient(settings.planomatic.base_url, "sandbox-key", timeout_seconds=5)
    return Components(
        settings=settings,
        state=engine,
        source=sa.create_engine("sqlite://"),
        rules=load_rule_set(REPO / "rules", catalog),
        catalog=catalog,
        client=client,
        pacer=Pacer(6000),
    )


def ack_to_state(state_url: str, deliveries: int, rate: float) -> None:
    engine = create_state_engine(state_url)
    migrate.upgrade(engine)
    now = datetime.now(UTC)
    insert_open_orders(engine, deliveries, now)
    parts = components(state_url, engine, None)
    applier = Applier(parts, lambda: datetime.now(UTC))
    stop = threading.Event()

    def apply_loop() -> None:  # the daemon's job: every 0.5 s
        while not stop.wait(0.5):
            applier.run(CycleSummary())

    listener = webhook_listener(
        "127.0.0.1:0",
        create_state_engine(state_url),
        TokenChecker([TOKEN]),
        ServeMetrics(),
        1 if state_url.startswith("sqlite") else 4,
    )
    server = ReceiverServer([listener])
    server.start()
    url = f"{server.urls()['webhooks']}/webhooks/planomatic/{TOKEN}"
    worker = threading.Thread(target=apply_loop, daemon=True)
    worker.start()
    acked: dict[str, datetime] = {}
    try:
        with httpx.Client(timeout=10) as http:
            for i in range(deliveries):
                body = {
                    "order_id": 100000 + i,
                    "order_status": "scheduled",
                    "event": "appointment.scheduled",
                    "event_datetime": now.isoformat(),
                }
                answer = http.post(url, content=json.dumps(body).encode())
                answer.raise_for_status()
                acked[str(100000 + i)] = datetime.now(UTC)
                time.sleep(1 / rate)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                applied = dict(
                    connection.execute(
                        sa.select(orders.c.vendor_order_id, orders.c.vendor_news_at).where(
                            orders.c.vendor_news_at.is_not(None)
                        )
                    ).all()
                )
            if len(applied) >= deliveries:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join()
        server.stop()
    lags = sorted(
        max(0.0, (applied[key] - at).total_seconds()) for key, at in acked.items() if key in applied
    )
    p95 = lags[int(0.95 * (len(lags) - 1))] if lags else float("nan")
    print(
        f"ack -> order state: {len(lags)}/{deliveries} applied, median "
        f"{statistics.median(lags) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max "
        f"{lags[-1] * 1000:.0f} ms (apply interval 0.5 s, {rate:g} deliveries/s)"
    )
    engine.dispose()


def reconciliation(state_url: str, open_orders: int, silent: float) -> None:
    engine = create_state_engine(state_url)
    migrate.upgrade(engine)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    insert_open_orders(engine, open_orders, start)
    rng = random.Random(7)
    quiet = set(rng.sample(range(open_orders), int(open_orders * silent)))
    next_news = {
        i: start + timedelta(hours=rng.uniform(0, 12)) for i in range(open_orders) if i not in quiet
    }
    with engine.begin() as connection:  # every order had news within the last 12 hours
        for i in range(open_orders):
            connection.execute(
                orders.update()
                .where(orders.c.external_order_id == f"pr-bench-{i}")
                .values(vendor_news_at=start - timedelta(hours=rng.uniform(0, 12)))
            )
    with SandboxServer(SandboxConfig.default()) as sandbox:
        # The vendor knows every order (seeded in its ledger), so a retrieve is answered and
        # counts as news, as it would at PlanOmatic.
        ledger = sandbox._app.ledger
        vendor_ids = [
            ledger.create("sandbox-key", {"external_order_id": f"pr-bench-{i}"}, start, None)[
                "order_id"
            ]
            for i in range(open_orders)
        ]
        with engine.begin() as connection:
            for i, vendor_id in enumerate(vendor_ids):
                if str(vendor_id) != str(100000 + i):
                    connection.execute(
                        orders.update()
                        .where(orders.c.external_order_id == f"pr-bench-{i}")
                        .values(vendor_order_id=str(vendor_id))
                    )
        index = {i: str(vendor_id) for i, vendor_id in enumerate(vendor_ids)}
        parts = components(state_url, engine, sandbox.url)
        before = sandbox.requests_seen()
        per_day: list[int] = []
        now = start
        for run in range(96 * DAYS):  # simulated days, one status_sync run every 900 s
            if run % 96 == 0 and run:
                per_day.append(sandbox.requests_seen() - before)
                before = sandbox.requests_seen()
            now += timedelta(seconds=900)
            due = [i for i, at in next_news.items() if at <= now]
            if due:
                with engine.begin() as connection:
                    connection.execute(
                        orders.update()
                        .where(orders.c.vendor_order_id.in_([index[i] for i in due]))
                        .values(vendor_news_at=now)
                    )
                for i in due:
                    next_news[i] = now + timedelta(hours=rng.uniform(2, 12))
            reconcile_statuses(parts, now, CycleSummary())
        per_day.append(sandbox.requests_seen() - before)
    worst = max(per_day)
    print(
        f"reconciliation: {open_orders} open orders, {len(quiet)} without webhooks: retrieves "
        f"per simulated day {per_day}; the worst day = {worst / VENDOR_LIMIT_PER_DAY:.2%} of a "
        f"50/min limit (goal <= 10%)"
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--state", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="deliveries per second")
    parser.add_argument("--open", type=int, default=10_000, help="open orders to reconcile")
    parser.add_argument("--silent", type=float, default=0.01, help="share without webhooks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for measure in ("ack", "reconcile"):
            url, name = state_database(args.state, Path(folder) / measure)
            (Path(folder) / measure).mkdir()
            try:
                if measure == "ack":
                    ack_to_state(url, args.deliveries, args.rate)
                else:
                    reconciliation(url, args.open, args.silent)
            finally:
                drop(name)


if __name__ == "__main__":
    main()
