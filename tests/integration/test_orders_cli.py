"""`propready orders approve/cancel/sync/resolve/list` against a real state database and sandbox."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, outbox
from propready.adapters.store.engine import create_state_engine
from propready.core.orders import OrderState
from propready.service import run_cycle
from tests.integration.cycle_support import Clock, PmDatabase, make_settings, wired
from tests.integration.test_orders_recovery import _config


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), "orders", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )


def _json_rows(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _orders_for(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, mode: str
) -> dict[str, str]:
    """Make H1 and H2 ready and run cycles in `mode`; return property -> external_order_id."""
    clock = Clock()
    settings = make_settings(state_url, pm.url, sandbox.url, mode=mode)
    with wired(settings) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        pm.set("H2", status="Vacant Unrented Ready")
        clock.now += timedelta(minutes=5)
        run_cycle(parts, clock)
        with parts.state.connect() as connection:
            rows = outbox.list_orders(connection)
    return {r.external_property_id: r.external_order_id for r in rows}


def _config_for(tmp_path: Path, state_url: str, sandbox: SandboxServer, mode: str) -> Path:
    config = _config(tmp_path, state_url, sandbox.url, 0)
    config.write_text(config.read_text() + f'[orders]\nmode = "{mode}"\n')
    return config


def test_approve_releases_an_order_and_cancel_of_an_unsent_one_stays_local(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """approval mode: approve moves one order to planned; cancel frees the other, sending nothing."""
    ids = _orders_for(state_url, pm, sandbox, "approval")
    config = _config_for(tmp_path, state_url, sandbox, "approval")
    waiting = _json_rows(_cli(config, "list", "--state", "awaiting_approval", "--format", "jsonl"))
    assert {r["external_order_id"] for r in waiting} == set(ids.values())
    (approved,) = _json_rows(_cli(config, "approve", ids["H1"], "--format", "jsonl"))
    assert approved["state"] == "planned"
    again = _cli(config, "approve", ids["H1"])
    assert again.returncode == 1
    assert "not awaiting_approval" in again.stderr
    canceled = _cli(config, "cancel", ids["H2"], "--notes", "home sold", "--format", "csv")
    assert canceled.returncode == 0, canceled.stderr
    (row,) = list(csv.DictReader(io.StringIO(canceled.stdout)))
    assert row["state"] == "canceled"
    assert sandbox.requests_seen() == 0
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            kinds = [e["kind"] for e in audit.query_events(connection)]
    finally:
        engine.dispose()
    assert {"order_approved", "order_canceled"} <= set(kinds)


def test_cancel_at_the_vendor_and_its_refusal_after_scheduling(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """A new order is canceled at PlanOmatic; a scheduled one is refused with the reason."""
    ids = _orders_for(state_url, pm, sandbox, "live")
    config = _config_for(tmp_path, state_url, sandbox, "live")
    by_property = {o["external_property_id"]: o for o in sandbox.orders}
    bad_notes = _cli(config, "cancel", ids["H1"], "--notes", "x" * 256)
    assert bad_notes.returncode == 1
    assert "at most 255" in bad_notes.stderr
    (canceled,) = _json_rows(
        _cli(config, "cancel", ids["H1"], "--notes", "sold", "--format", "jsonl")
    )
    assert canceled["state"] == "canceled"
    assert sandbox.orders[0]["order_status"] == "canceled"
    sandbox.advance_status(by_property["H2"]["order_id"], "scheduled")
    synced = _json_rows(_cli(config, "sync", "--all", "--format", "jsonl"))
    assert [(r["external_order_id"], r["new_status"]) for r in synced] == [(ids["H2"], "scheduled")]
    refused = _cli(config, "cancel", ids["H2"], "--notes", "sold")
    assert refused.returncode == 1
    assert "'scheduled'" in refused.stderr
    assert "support" in refused.stderr
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            (changed,) = audit.query_events(connection, kinds=["order_status_changed"])
    finally:
        engine.dispose()
    assert changed["detail"]["from"] == "new_request"
    assert changed["detail"]["to"] == "scheduled"


def test_sync_records_a_vendor_side_cancel_and_frees_the_window(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """PlanOmatic canceled it: sync moves the order to canceled and its window ends."""
    ids = _orders_for(state_url, pm, sandbox, "live")
    config = _config_for(tmp_path, state_url, sandbox, "live")
    for order in sandbox.orders:
        if order["external_property_id"] == "H1":
            sandbox.advance_status(order["order_id"], "canceled")
    synced = _json_rows(_cli(config, "sync", "--all", "--format", "jsonl"))
    assert [(r["external_order_id"], r["state"]) for r in synced] == [(ids["H1"], "canceled")]
    assert _json_rows(_cli(config, "sync", "--format", "jsonl")) == []  # checked recently


def test_an_unknown_order_is_listed_and_resolved_by_the_operator(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """`list --state unknown` shows it; resolve with the vendor's id confirms and places it."""
    sandbox.inject("create", "drop", "500")
    ids = _orders_for(state_url, pm, sandbox, "live")
    config = _config_for(tmp_path, state_url, sandbox, "live")
    unknown = _json_rows(_cli(config, "list", "--state", "unknown", "--format", "jsonl"))
    assert {r["external_order_id"] for r in unknown} == set(ids.values())
    (saved,) = sandbox.orders  # the dropped one was saved; the 500 one was not
    mine = next(k for k, v in ids.items() if v == saved["external_order_id"])
    other = "H2" if mine == "H1" else "H1"
    wrong = _cli(config, "resolve", ids[other], "--vendor-order-id", str(saved["order_id"]))
    assert wrong.returncode == 1
    assert "belongs to" in wrong.stderr
    (placed,) = _json_rows(
        _cli(
            config,
            "resolve",
            ids[mine],
            "--vendor-order-id",
            str(saved["order_id"]),
            "--format",
            "jsonl",
        )
    )
    assert placed["state"] == OrderState.PLACED
    (failed,) = _json_rows(_cli(config, "resolve", ids[other], "--not-placed", "--format", "jsonl"))
    assert failed["state"] == OrderState.FAILED


def test_sync_says_how_many_recently_checked_orders_it_skipped(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """Orders checked within 15 minutes are skipped unless --all, and the count says so."""
    _orders_for(state_url, pm, sandbox, "live")
    config = _config_for(tmp_path, state_url, sandbox, "live")
    first = _cli(config, "sync")
    assert first.returncode == 0, first.stderr
    assert "2 order(s) retrieved, 0 changed" in first.stderr
    assert "skipped" not in first.stderr
    again = _cli(config, "sync")
    assert "0 order(s) retrieved, 0 changed" in again.stderr
    assert (
        "2 placed order(s) skipped: checked in the last 15 minutes (the daemon keeps checking "
        "them); --all includes them"
    ) in again.stderr
    every = _cli(config, "sync", "--all", "--limit", "1")
    assert "1 order(s) retrieved" in every.stderr
    assert "1 more order(s) due: run it again or raise --limit" in every.stderr


def test_hold_stops_a_planned_order_until_it_is_approved_again(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """hold: planned -> awaiting_approval with the reason, refused for any other state; approve
    releases it and the next cycle sends it."""
    ids = _orders_for(state_url, pm, sandbox, "approval")
    config = _config_for(tmp_path, state_url, sandbox, "approval")
    waiting = _cli(config, "hold", ids["H1"], "--reason", "tenant moving out")
    assert waiting.returncode == 1
    assert "is awaiting_approval; only a planned order can be held" in waiting.stderr
    assert _json_rows(_cli(config, "approve", ids["H1"], "--format", "jsonl"))[0]["state"] == (
        "planned"
    )
    blank = _cli(config, "hold", ids["H1"], "--reason", "   ")
    assert blank.returncode == 1
    assert "a reason is required" in blank.stderr
    (held,) = _json_rows(
        _cli(config, "hold", ids["H1"], "--reason", "tenant  moving out", "--format", "jsonl")
    )
    assert held["state"] == "awaiting_approval"
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            rows = [e for e in audit.query_events(connection) if e["kind"] == "order_held"]
        assert len(rows) == 1
        assert rows[0]["detail"]["hold_reason"] == "tenant moving out"
        assert rows[0]["detail"]["held_by"]
        # Held, it is not sent; approved again, the next cycle sends it.
        settings = make_settings(state_url, pm.url, sandbox.url, mode="approval")
        later = Clock(datetime.now(UTC) + timedelta(minutes=1))  # the CLI stamps real time
        with wired(settings) as parts:
            run_cycle(parts, later)
            assert sandbox.requests_seen() == 0
            _json_rows(_cli(config, "approve", ids["H1"], "--format", "jsonl"))
            later.now = datetime.now(UTC) + timedelta(minutes=1)
            run_cycle(parts, later)
        assert sandbox.requests_seen() == 1
        with engine.connect() as connection:
            order = outbox.find_by_external_order_id(connection, ids["H1"])
        assert order is not None
        assert order.state is OrderState.PLACED
    finally:
        engine.dispose()
    placed = _cli(config, "hold", ids["H1"], "--reason", "too late")
    assert placed.returncode == 1
    assert "is placed; only a planned order can be held" in placed.stderr
