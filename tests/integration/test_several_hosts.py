"""Three `propready run` processes on one PostgreSQL state database and one vendor.

They poll once per tick between them, claim orders with SKIP LOCKED, and when one dies right
after its POST (SIGKILL, before recording the answer) another takes its order over once the
lease expires and settles it under the vendor's duplicate protection. The vendor ends up with
exactly one order per ready home: none twice, none missing.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from tests.integration.cycle_support import API_KEY, QUERY, REPO, PmDatabase, home
from tests.integration.daemon_support import (
    DaemonProcess,
    audit_kinds,
    orders_by_state,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HOMES = [f"H{n:02d}" for n in range(1, 25)]
LEASE_SECONDS = 8


def _config(tmp_path: Path, name: str, state_url: str, sandbox_url: str, send_every: float) -> Path:
    return write_config(
        tmp_path / f"{name}.toml",
        {
            "state": {"url": state_url},
            "source": {
                "url": f"sqlite:///{tmp_path / 'pm.db'}",
                "query": QUERY,
                "poll_interval_seconds": 1,
            },
            "rules": {"path": REPO / "rules"},
            "planomatic": {
                "base_url": sandbox_url,
                "api_key": API_KEY,
                "requests_per_minute": 600,
                "timeout_seconds": 3,
                "vendor_duplicate_protection_hours": 24,
            },
            "daemon": {
                "instance_name": name,
                "send_interval_seconds": send_every,
                "recovery_interval_seconds": 1,
                "lease_seconds": LEASE_SECONDS,
            },
            "metrics": {"listen": "127.0.0.1:0"},
            "log": {"format": "json"},
        },
    )


def test_three_hosts_order_every_home_exactly_once_when_one_dies_mid_send(
    tmp_path: Path, pg_state_url: str
) -> None:
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(*(home(code) for code in HOMES))
    base = SandboxConfig.default()
    sandbox_config = SandboxConfig(
        api_keys=base.api_keys, catalog=base.catalog, duplicate_threshold_hours=24
    )
    daemons: dict[str, DaemonProcess] = {}
    with SandboxServer(sandbox_config) as sandbox:
        try:
            # h3 sends eagerly and dies right after its first POST, before recording the answer.
            for name, send_every, env in (
                ("h1", 1.0, {}),
                ("h2", 1.0, {}),
                ("h3", 0.2, {"PROPREADY_CRASH_AT": "after_post"}),
            ):
                config = _config(tmp_path, name, pg_state_url, sandbox.url, send_every)
                daemons[name] = DaemonProcess(config, tmp_path / f"{name}.log", env).start()
            for daemon in daemons.values():
                daemon.wait_for("ready")
            wait_until(
                "the first poll",
                lambda: any(
                    e.get("job") == "poll" and e.get("rows")
                    for d in daemons.values()
                    for e in d.events("cycle")
                ),
            )
            started = time.monotonic()
            for code in HOMES[:12]:
                pm.set(code, status="Vacant Unrented Ready")
            h3 = daemons["h3"].process
            assert h3 is not None
            wait_until("h3 to die after its POST", lambda: h3.poll() is not None, timeout=30)
            assert h3.returncode == -signal.SIGKILL
            for code in HOMES[12:]:
                pm.set(code, status="Vacant Unrented Ready")
            wait_until(
                "every home's order placed",
                lambda: orders_by_state(pg_state_url) == {"placed": len(HOMES)},
                timeout=90,
            )
            elapsed = time.monotonic() - started
            assert daemons["h1"].stop() == 0, daemons["h1"].tail()
            assert daemons["h2"].stop() == 0, daemons["h2"].tail()
        finally:
            for daemon in daemons.values():
                daemon.kill()
            pm.close()
        vendor_orders = sandbox.orders
    # The vendor has one order per home: no duplicate, none lost.
    ordered = sorted(order["external_property_id"] for order in vendor_orders)
    assert ordered == HOMES
    # h3's order was taken over after its lease expired and confirmed by the vendor's
    # duplicate answer, not placed a second time.
    takeovers = [
        row
        for row in audit_kinds(pg_state_url, "order_resend_scheduled")
        if "lease expired" in row["detail"]["reason"]
    ]
    assert len(takeovers) == 1
    assert takeovers[0]["host"] in {"h1", "h2"}
    confirmed = [
        row
        for row in audit_kinds(pg_state_url, "order_placed")
        if row["detail"].get("confirmed_by") == "vendor_duplicate_protection"
    ]
    assert [row["external_order_id"] for row in confirmed] == [takeovers[0]["external_order_id"]]
    # Work was shared: more than one host sent orders.
    senders = {row["host"] for row in audit_kinds(pg_state_url, "order_sending")}
    assert len(senders) >= 2, senders
    # One poll per tick between the hosts, not one per host: at most one per 0.9 s or so.
    polls = [
        event
        for daemon in daemons.values()
        for event in daemon.events("cycle")
        if event.get("job") == "poll" and not event.get("poll_skipped")
    ]
    skipped = [
        event
        for daemon in daemons.values()
        for event in daemon.events("cycle")
        if event.get("job") == "poll" and event.get("poll_skipped")
    ]
    assert skipped, "no host ever skipped a tick another host had polled"
    assert len(polls) <= elapsed / 0.9 + 10
