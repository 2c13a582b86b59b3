"""Benchmark: drain a backlog of ready homes through the sender against a rate-limited sandbox.

Targets (issue 5): sustained send rate >= 95 % of the allowed rate, no 429 caused by our own
pacing, drain time = backlog / rate within 5 %.

The vendor allows 100 requests per 60 s and answers in about 100 ms. `--speedup 10` runs the
same shape ten times faster: a 6 s window and 10 ms latency (every time scaled alike), so
2,000 orders drain in about 2 minutes instead of 20. Figures are reported in both scales.

    .venv/bin/python tests/benchmarks/bench_send.py                       # 2,000 homes, x10
    .venv/bin/python tests/benchmarks/bench_send.py --speedup 1 --homes 200  # real time
    .venv/bin/python tests/benchmarks/bench_send.py --state-url postgresql://root@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from propready.adapters.catalog_file import load_catalog
from propready.adapters.planomatic import PlanomaticClient
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import migrate, outbox
from propready.adapters.store.engine import create_state_engine
from propready.core.orders import OrderState
from propready.core.planning import OrderPlan
from propready.log import configure_logging
from propready.service import Components, CycleSummary, Pacer, send_due
from propready.settings import Settings

REPO = Path(__file__).resolve().parents[2]
VENDOR_LIMIT = 100  # requests per vendor window
VENDOR_WINDOW = 60.0  # seconds
VENDOR_LATENCY = 0.100  # seconds


def _payload(index: int) -> dict[str, object]:
    property_id = f"BENCH-{index:05d}"
    return {
        "external_property_id": property_id,
        "external_order_id": f"pr-bench-{index:05d}",
        "billing_entity_slug": "investment_entity_1",
        "services": [{"slug": "photos", "quantity": 25}],
        "property": {
            "location": {
                "street": f"{index} Main St",
                "city": "Denver",
                "state": "CO",
                "postal_code": "80202",
            }
        },
        "property_access": {
            "vacant": True,
            "method_of_access": "lockbox_code",
            "access_code": "1234",
            "lockbox_location": "front door",
            "onsite_contact_name": "Pat Lee",
            "onsite_contact_phone": "+1 555-555-5555",
        },
    }


def _backlog(state_url: str, homes: int) -> None:
    engine = create_state_engine(state_url)
    try:
        migrate.upgrade(engine)
        now = datetime.now(UTC)
        with engine.begin() as connection:
            for index in range(homes):
                payload = _payload(index)
                plan = OrderPlan(
                    str(payload["external_order_id"]),
                    str(payload["external_property_id"]),
                    "investment_entity_1",
                    payload,
                    72,
                    False,
                )
                outbox.insert_order(
                    connection,
                    plan,
                    event_id=None,
                    rule_id="bench",
                    rules_version="bench",
                    state=OrderState.PLANNED,
                    now=now,
                )
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=2000)
    parser.add_argument("--speedup", type=float, default=10.0)
    parser.add_argument("--state-url", help="an empty database (default: a temporary SQLite file)")
    args = parser.parse_args()
    configure_logging(level="warning")  # one line per order would cost more than it tells
    window = VENDOR_WINDOW / args.speedup
    latency = VENDOR_LATENCY / args.speedup
    per_minute = round(VENDOR_LIMIT * 60 / window)  # the same rate in our per-minute setting
    allowed_per_second = VENDOR_LIMIT / window

    with tempfile.TemporaryDirectory() as tmp:
        state_url = args.state_url or f"sqlite:///{Path(tmp) / 'state.db'}"
        _backlog(state_url, args.homes)
        base = SandboxConfig.default()
        sandbox_config = SandboxConfig(
            api_keys=base.api_keys,
            catalog=base.catalog,
            rate_limit=VENDOR_LIMIT,
            rate_window_seconds=window,
            latency_seconds=latency,
        )
        settings = Settings(
            state={"url": state_url},
            source={"url": f"sqlite:///{Path(tmp) / 'pm.db'}", "query": "SELECT 1"},
            rules={"path": REPO / "rules"},
            planomatic={"api_key": "sandbox-key", "requests_per_minute": per_minute},
        )
        catalog = load_catalog()
        state = create_state_engine(state_url)
        with (
            SandboxServer(sandbox_config) as sandbox,
            PlanomaticClient(sandbox.url, "sandbox-key", timeout_seconds=10) as client,
        ):
            parts = Components(
                settings=settings,
                state=state,
                source=state,
                rules=load_rule_set(settings.rules.path, catalog),
                catalog=catalog,
                client=client,
                owner=f"bench:{os.getpid()}",
                pacer=Pacer(per_minute),
                jitter=random.Random(1),
            )
            summary = CycleSummary()
            started = time.monotonic()
            send_due(parts, lambda: datetime.now(UTC), summary)
            elapsed = time.monotonic() - started
            requests = sandbox.requests_seen()
            placed = len(sandbox.orders)
        state.dispose()

    too_many = requests - placed  # every request that did not create an order was a 429 here
    sustained = placed / elapsed
    ideal_drain = args.homes / allowed_per_second
    load = os.getloadavg()
    print(f"backlog                 {args.homes} homes, speedup x{args.speedup:g}")
    print(
        f"vendor limit            {VENDOR_LIMIT} per {window:g} s ({allowed_per_second:.2f}/s), latency {latency * 1000:.0f} ms"
    )
    print(
        f"placed                  {placed}   (summary: placed={summary.placed} rate_limited={summary.rate_limited} retried={summary.retried})"
    )
    print(f"HTTP 429 answers        {too_many}")
    print(
        f"drain time              {elapsed:.1f} s  (x{args.speedup:g} = {elapsed * args.speedup / 60:.1f} min real scale)"
    )
    print(
        f"backlog / allowed rate  {ideal_drain:.1f} s  -> drain ratio {elapsed / ideal_drain:.3f} (target 1.00 +- 0.05)"
    )
    print(
        f"sustained rate          {sustained:.2f}/s = {sustained / allowed_per_second * 100:.1f} % of allowed (target >= 95 %)"
    )
    print(
        f"load average            {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores, shared machine)"
    )


if __name__ == "__main__":
    main()
