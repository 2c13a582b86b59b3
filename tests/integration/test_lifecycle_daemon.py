"""The order lifecycle in real processes: `propready run` applying stored deliveries, killed
mid-apply, and the whole path sandbox -> webhook receiver -> daemon -> order delivered."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import deliveries, outbox
from propready.adapters.store.deliverables import deliverables_for
from propready.adapters.store.engine import create_state_engine
from propready.core.orders import Order
from propready.core.webhook_delivery import DeliveryState
from propready.service import CycleSummary
from propready.service.vendor_news import apply_news
from propready.service.webhook_intake import store_delivery
from tests.integration.cycle_support import (
    API_KEY,
    QUERY,
    REPO,
    SECRET_CODE,
    Clock,
    PmDatabase,
    home,
    make_settings,
    wired,
)
from tests.integration.daemon_support import DaemonProcess, audit_kinds, wait_until, write_config
from tests.integration.test_vendor_news import delivered_body, place_orders
from tests.integration.webhook_support import running_receiver

pytestmark = pytest.mark.slow


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(home("H1"), home("H2"))
    yield database
    database.close()


def _config(tmp_path: Path, state_url: str, pm: PmDatabase, sandbox_url: str) -> Path:
    return write_config(
        tmp_path / "propready.toml",
        {
            "state": {"url": state_url},
            "source": {"url": pm.url, "query": QUERY, "poll_interval_seconds": 1},
            "rules": {"path": REPO / "rules"},
            "orders": {"mode": "live"},
            "planomatic": {
                "base_url": sandbox_url,
                "api_key": API_KEY,
                "requests_per_minute": 600,
                "timeout_seconds": 5,
            },
            "daemon": {"send_interval_seconds": 0.5, "apply_news_interval_seconds": 0.2},
            "metrics": {"listen": "127.0.0.1:0"},
            "log": {"format": "json"},
        },
    )


def _order(state_url: str, order_id: int) -> tuple[Order, list[Any], list[Any]]:
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            order = outbox.get_order(connection, order_id)
            assert order is not None
            return (
                order,
                deliverables_for(connection, order_id),
                deliveries.list_deliveries(connection),
            )
    finally:
        engine.dispose()


def test_a_daemon_killed_mid_apply_leaves_nothing_half_applied(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """SIGKILL after the delivery was applied and before the commit: the order, its
    deliverables and the audit log are untouched and the delivery still pending; the next
    daemon applies it exactly once."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        h1 = place_orders(parts, pm, clock)["H1"]
        store_delivery(parts.state, json.dumps(delivered_body(h1)).encode(), clock.now)
    config = _config(tmp_path, state_url, pm, sandbox.url)
    crashing = DaemonProcess(
        config, tmp_path / "crash.log", env={"PROPREADY_CRASH_AT": "apply_before_commit"}
    ).start()
    try:
        assert crashing.process is not None
        assert crashing.process.wait(timeout=60) == -signal.SIGKILL
    finally:
        crashing.kill()
    order, shown, stored = _order(state_url, h1.id)
    assert (order.vendor_status, order.delivered_at, order.vendor_news_at) == (
        "new_request",
        None,
        None,
    )
    assert shown == []
    assert [d.state for d in stored] == [DeliveryState.PENDING]
    assert audit_kinds(state_url, "order_delivered") == []
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        wait_until("the delivery applied", lambda: audit_kinds(state_url, "order_delivered"))
        time.sleep(1)  # a few more apply runs: nothing more may happen
    finally:
        assert daemon.stop() == 0
    order, shown, stored = _order(state_url, h1.id)
    assert order.vendor_status == "completed"
    assert order.delivered_at is not None
    assert len(shown) == 4
    assert [d.state for d in stored] == [DeliveryState.APPLIED]
    assert len(audit_kinds(state_url, "order_delivered")) == 1
    assert len(audit_kinds(state_url, "order_status_changed")) == 1


def test_sandbox_webhooks_through_the_receiver_reach_the_order(
    tmp_path: Path, state_url: str, pm: PmDatabase
) -> None:
    """The sandbox places the order and sends its webhooks to the real receiver; the daemon
    applies them: the order reaches delivered with its links and photos, within a second or
    two of the acknowledgement."""
    with running_receiver(state_url) as receiver:
        base = SandboxConfig.default()
        config_sandbox = SandboxConfig(
            api_keys=base.api_keys,
            catalog=base.catalog,
            webhook_url=receiver.webhook_url,
            webhook_retry_seconds=0.2,
        )
        with SandboxServer(config_sandbox) as sandbox:
            config = _config(tmp_path, state_url, pm, sandbox.url)
            daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
            try:
                daemon.wait_for("cycle", lambda e: e.get("job") == "poll", timeout=60)
                pm.set("H1", status="Vacant Unrented Ready")
                wait_until("the order placed", lambda: sandbox.orders, timeout=60)
                vendor_id = sandbox.orders[0]["order_id"]
                sandbox.advance_status(vendor_id, "scheduled")
                sandbox.advance_status(vendor_id, "delivered")
                hooks = sandbox.webhooks
                assert hooks is not None
                assert hooks.wait_idle(30)
                acknowledged = time.monotonic()
                wait_until(
                    "the order delivered",
                    lambda: audit_kinds(state_url, "order_delivered"),
                    timeout=30,
                )
                lag = time.monotonic() - acknowledged
            finally:
                assert daemon.stop() == 0
    (delivered,) = audit_kinds(state_url, "order_delivered")
    order, shown, _stored = _order(state_url, int(delivered["order_id"]))
    assert order.vendor_status == "completed"
    assert order.vendor_order_id == str(vendor_id)
    links = {d.name: d.url for d in shown if d.kind == "link"}
    assert set(links) == {"photo_manage_link", "zillow_3d_link"}
    assert len([d for d in shown if d.kind == "photo"]) == 25
    assert lag < 5, lag


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_orders_show_list_and_explain_show_what_was_delivered(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        orders = place_orders(parts, pm, clock)
        h1 = orders["H1"]
        store_delivery(parts.state, json.dumps(delivered_body(h1)).encode(), clock.now)
        apply_news(parts, clock, CycleSummary())
    config = _config(tmp_path, state_url, pm, sandbox.url)
    listed = _cli(config, "orders", "list", "--state", "delivered", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["external_order_id"] == h1.external_order_id
    assert row["delivered_at"].startswith("2026-11-30")
    shown = _cli(config, "orders", "show", h1.external_order_id, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    (order,) = json.loads(shown.stdout)
    assert [(d["kind"], d["name"], d["sequence"]) for d in order["deliverables"]] == [
        ("link", "photo_manage_link", 0),
        ("link", "zillow_3d_link", 0),
        ("photo", "photo", 1),
        ("photo", "photo", 2),
    ]
    assert SECRET_CODE not in shown.stdout
    table = _cli(config, "orders", "show", h1.external_order_id)
    assert "photo_manage_link" in table.stdout
    assert "Front View" in table.stdout
    story = _cli(config, "explain", "H1", "--format", "json")
    assert story.returncode == 0, story.stderr
    summaries = [row["summary"] for row in json.loads(story.stdout)]
    assert any(s.startswith("delivered at 2026-11-30") and "zillow_3d_link" in s for s in summaries)
    table = _cli(config, "explain", "H1")  # the table lists the links and photos too
    assert table.returncode == 0, table.stderr
    assert f"delivered for {h1.external_order_id}" in table.stdout
    assert "https://cdn.planomatic.example/1-1.jpg" in table.stdout
