"""Benchmark: one host against three, real `propready run` processes on one PostgreSQL state DB.

A backlog of ready homes is drained through the sandbox under the vendor's limit (100 requests
per 60 s, sped up 10x: 100 per 6 s, 10 ms latency, `requests_per_minute = 1000`). Three hosts
must share the one limit (the same rate and no 429, not three times the rate), lose nothing and
order nothing twice. A second run SIGKILLs one of the three hosts mid-drain and reports how long
its abandoned order took to be settled by another host (about lease_seconds after the kill).

    .venv/bin/python tests/benchmarks/bench_hosts.py                 # 300 homes
    .venv/bin/python tests/benchmarks/bench_hosts.py --homes 600

Needs PostgreSQL on 127.0.0.1:5432 (role root, trust); it creates and drops its own databases.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.log import configure_logging

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.integration.cycle_support import API_KEY, QUERY, PmDatabase, home  # noqa: E402
from tests.integration.daemon_support import DaemonProcess, write_config  # noqa: E402

ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
VENDOR_LIMIT, VENDOR_WINDOW, LATENCY = 100, 6.0, 0.010
REQUESTS_PER_MINUTE = int(VENDOR_LIMIT * 60 / VENDOR_WINDOW)
LEASE_SECONDS = 10


def _admin(sql: str) -> None:
    engine = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(sql))
    engine.dispose()


def _count(state_url: str, sql: str) -> int:
    engine = sa.create_engine(state_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text(sql)).scalar() or 0)
    finally:
        engine.dispose()


def _run(hosts: int, homes: int, kill_one: bool, workdir: Path) -> dict[str, Any]:
    name = f"propready_bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    state_url = f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    pm = PmDatabase(f"sqlite:///{workdir / 'pm.db'}")
    pm.insert(*(home(f"B{n:05d}") for n in range(homes)))
    base = SandboxConfig.default()
    sandbox_config = SandboxConfig(
        api_keys=base.api_keys,
        catalog=base.catalog,
        rate_limit=VENDOR_LIMIT,
        rate_window_seconds=VENDOR_WINDOW,
        latency_seconds=LATENCY,
        duplicate_threshold_hours=24,
    )
    daemons: list[DaemonProcess] = []
    try:
        with SandboxServer(sandbox_config) as sandbox:
            configs = []
            for index in range(hosts):
                configs.append(
                    write_config(
                        workdir / f"h{index}.toml",
                        {
                            "state": {"url": state_url},
                            "source": {
                                "url": pm.url,
                                "query": QUERY,
                                "poll_interval_seconds": 2,
                                "batch_size": 1000,
                            },
                            "rules": {"path": REPO / "rules"},
                            "planomatic": {
                                "base_url": sandbox.url,
                                "api_key": API_KEY,
                                "requests_per_minute": REQUESTS_PER_MINUTE,
                                "timeout_seconds": 5,
                                "vendor_duplicate_protection_hours": 24,
                            },
                            "daemon": {
                                "instance_name": f"h{index}",
                                "send_interval_seconds": 1,
                                "recovery_interval_seconds": 1,
                                "lease_seconds": LEASE_SECONDS,
                            },
                            "metrics": {"listen": ""},
                            "log": {"format": "json", "level": "warning"},
                        },
                    )
                )
            migrated = subprocess.run(
                [sys.executable, "-m", "propready", "--config", str(configs[0]), "db", "upgrade"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert migrated.returncode == 0, migrated.stderr
            for index, config in enumerate(configs):
                daemons.append(DaemonProcess(config, workdir / f"h{index}.log").start())
            while _count(state_url, "SELECT count(*) FROM property_state") < homes:
                time.sleep(0.2)
            for n in range(homes):
                pm.set(f"B{n:05d}", status="Vacant Unrented Ready")
            while _count(state_url, "SELECT count(*) FROM orders") < homes:
                time.sleep(0.05)
            first_send = time.monotonic()
            killed_at: float | None = None
            settled_after: float | None = None
            while True:
                placed = _count(state_url, "SELECT count(*) FROM orders WHERE state = 'placed'")
                if kill_one and killed_at is None and placed >= homes // 3:
                    victim = daemons[-1].process
                    assert victim is not None
                    victim.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    # What the victim held at that moment is in `sending` under its name.
                    held = _count(
                        state_url,
                        f"SELECT count(*) FROM orders WHERE state = 'sending' "
                        f"AND lease_owner LIKE 'h{hosts - 1}:%'",
                    )
                if killed_at is not None and settled_after is None:
                    still_held = _count(
                        state_url,
                        f"SELECT count(*) FROM orders WHERE state = 'sending' "
                        f"AND lease_owner LIKE 'h{hosts - 1}:%'",
                    )
                    if still_held == 0:
                        settled_after = time.monotonic() - killed_at
                if placed >= homes:
                    break
                time.sleep(0.05)
            drain = time.monotonic() - first_send
            vendor_orders = sandbox.orders
            rejected_429 = sandbox.requests_seen() - len(vendor_orders)
        for daemon in daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                assert daemon.stop() == 0
        property_ids = [order["external_property_id"] for order in vendor_orders]
        senders: dict[str, int] = {}
        engine = sa.create_engine(state_url)
        with engine.connect() as connection:
            for host, count in connection.execute(
                sa.text(
                    "SELECT host, count(*) FROM audit_log WHERE kind = 'order_sending' GROUP BY host"
                )
            ):
                senders[str(host)] = int(count)
        engine.dispose()
        ideal = homes / (REQUESTS_PER_MINUTE / 60)
        return {
            "hosts": hosts,
            "homes": homes,
            "killed_one": kill_one,
            "drain_seconds": round(drain, 1),
            "ideal_seconds": round(ideal, 1),
            "rate_share_of_limit": round(ideal / drain, 3),
            "vendor_orders": len(vendor_orders),
            "duplicates": len(property_ids) - len(set(property_ids)),
            "missing": homes - len(set(property_ids)),
            "other_requests_incl_429": rejected_429,
            "sends_by_host": senders,
            "victim_held": held if kill_one else None,
            "takeover_seconds": round(settled_after, 1) if settled_after is not None else None,
        }
    finally:
        for daemon in daemons:
            daemon.kill()
        pm.close()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=300)
    args = parser.parse_args()
    os.environ.pop("NOTIFY_SOCKET", None)
    configure_logging(fmt="console", level="warning")  # the in-process sandbox logs each request
    results = []
    for hosts, kill_one in ((1, False), (3, False), (3, True)):
        with tempfile.TemporaryDirectory(prefix="propready-bench-hosts-") as folder:
            result = _run(hosts, args.homes, kill_one, Path(folder))
        results.append(result)
        print(json.dumps(result), flush=True)
    one, three = results[0], results[1]
    print(
        f"\n3 hosts vs 1: drain {three['drain_seconds']} s vs {one['drain_seconds']} s "
        f"(ratio {three['drain_seconds'] / one['drain_seconds']:.3f}); "
        f"share of the vendor limit {three['rate_share_of_limit']:.1%} vs "
        f"{one['rate_share_of_limit']:.1%}"
    )


if __name__ == "__main__":
    main()
