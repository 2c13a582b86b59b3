"""One cycle end to end: real PM database, real state database (SQLite and PostgreSQL), sandbox."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import audit, outbox
from propready.adapters.store.schema import audit_log, orders
from propready.core.orders import Order, OrderState
from propready.service import CycleSummary, recover, run_cycle
from tests.integration.cycle_support import (
    SECRET_CODE,
    Clock,
    PmDatabase,
    home,
    make_settings,
    wired,
)


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(
        home("H1"),
        home("H2", status="Vacant Unrented Ready"),
        home("H3", kind="condo_townhouse", beds=2),
        home("H4", final_date=None, status="Under Construction"),
    )
    yield database
    database.close()


def _kinds(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(sa.select(audit_log.c.kind).order_by(audit_log.c.id)).scalars()
        )


def _orders(engine: sa.Engine) -> list[Order]:
    with engine.connect() as connection:
        return outbox.list_orders(connection)


def test_first_sight_does_not_order(state_url: str, pm: PmDatabase, sandbox: SandboxServer) -> None:
    """Homes already ready when first seen are remembered, not ordered (first_sight = ignore)."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        summary = run_cycle(parts, clock)
        assert summary.rows == 4
        assert summary.new_properties == 4
        assert summary.events == 0
        assert sandbox.orders == []
        assert _orders(parts.state) == []


def test_first_sight_fire_orders_homes_already_ready(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """With first_sight = fire, a home already ready on the first poll is ordered."""
    with wired(make_settings(state_url, pm.url, sandbox.url, first_sight="fire")) as parts:
        summary = run_cycle(parts, Clock())
    assert summary.events == 1
    assert summary.placed == 1
    assert [o["external_property_id"] for o in sandbox.orders] == ["H2"]


def test_a_home_that_becomes_ready_is_ordered_exactly_once(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """A rising edge places one order at the vendor; later cycles add nothing."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        clock.now += timedelta(minutes=5)
        summary = run_cycle(parts, clock)
        assert (summary.events, summary.orders_created, summary.placed) == (1, 1, 1)
        for _ in range(2):
            clock.now += timedelta(minutes=5)
            again = run_cycle(parts, clock)
            assert (again.events, again.sent) == (0, 0)
        (order,) = _orders(parts.state)
        kinds = _kinds(parts.state)
        assert order.state == OrderState.PLACED
        assert order.vendor_order_id == str(sandbox.orders[0]["order_id"])
    (vendor_order,) = sandbox.orders
    assert vendor_order["external_property_id"] == "H1"
    assert vendor_order["external_order_id"] == order.external_order_id
    assert vendor_order["services"] == [
        {"slug": "photos", "quantity": 25},
        {"slug": "zillow_3d_and_floor_plans", "quantity": 1},
    ]
    assert kinds == [
        "trigger_fired",
        "rule_matched",
        "order_created",
        "order_sending",
        "order_placed",
    ]


def test_rearmed_trigger_inside_the_window_is_blocked_and_audited(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """Ready, occupied, ready again within the window: the second plan is blocked by the first."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        run_cycle(parts, clock)
        for status in ("Vacant Unrented Ready", "Occupied", "Vacant Unrented Ready"):
            pm.set("H1", status=status)
            clock.now += timedelta(hours=1)
            run_cycle(parts, clock)
        with parts.state.connect() as connection:
            (blocked,) = audit.query_events(connection, kinds=["duplicate_blocked"])
        (order,) = _orders(parts.state)
    assert len(sandbox.orders) == 1
    assert blocked["external_order_id"] == order.external_order_id
    assert blocked["detail"]["window_hours"] == 720


def test_rearmed_trigger_after_the_window_orders_again(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """The next turnover after the duplicate window has passed gets its own order."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        run_cycle(parts, clock)
        pm.set("H3", status="Vacant Unrented Ready")  # attached-homes: default 72 h window
        run_cycle(parts, clock)
        pm.set("H3", status="Occupied")
        clock.now += timedelta(days=2)
        run_cycle(parts, clock)
        pm.set("H3", status="Vacant Unrented Ready")
        clock.now += timedelta(days=2)
        run_cycle(parts, clock)
    assert [o["external_property_id"] for o in sandbox.orders] == ["H3", "H3"]
    assert sandbox.orders[0]["external_order_id"] != sandbox.orders[1]["external_order_id"]


def test_dry_run_decides_and_audits_but_sends_nothing(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """In dry_run mode the decision is audited and no order row or vendor request exists."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url, mode="dry_run")) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        run_cycle(parts, clock)
        assert _orders(parts.state) == []
        assert "order_planned_dry_run" in _kinds(parts.state)
    assert sandbox.requests_seen() == 0


def test_approval_mode_holds_orders(state_url: str, pm: PmDatabase, sandbox: SandboxServer) -> None:
    """In approval mode the order waits in awaiting_approval and is not sent."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url, mode="approval")) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        run_cycle(parts, clock)
        (order,) = _orders(parts.state)
    assert order.state == OrderState.AWAITING_APPROVAL
    assert sandbox.orders == []


def test_vendor_rejection_is_final_and_names_the_fields(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """A 400 moves the order to rejected, with the vendor's field errors in the audit log."""
    clock = Clock()
    pm.set("H1", zip=None)  # passes our checks only if the field is present: make it empty
    pm.set("H1", zip="80205")
    # A sandbox whose key bills other entities: it refuses investment_entity_1.
    config = dataclasses.replace(
        SandboxConfig.default(), api_keys={"sandbox-key": frozenset({"other_entity"})}
    )
    with (
        SandboxServer(config) as strict,
        wired(make_settings(state_url, pm.url, strict.url)) as parts,
    ):
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        summary = run_cycle(parts, clock)
        (order,) = _orders(parts.state)
        with parts.state.connect() as connection:
            (rejected,) = audit.query_events(connection, kinds=["order_rejected"])
    assert summary.rejected == 1
    assert order.state == OrderState.REJECTED
    assert {"attr": "billing_entity_slug", "message": "unauthorized"} in rejected["detail"][
        "errors"
    ]


def test_unreachable_vendor_schedules_a_retry(state_url: str, pm: PmDatabase) -> None:
    """Connection refused never reached the vendor: the order goes back to planned, later."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, "http://127.0.0.1:9")) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        summary = run_cycle(parts, clock)
        (order,) = _orders(parts.state)
    assert summary.retried == 1
    assert order.state == OrderState.PLANNED
    assert order.attempts == 1
    assert order.next_attempt_at > clock.now


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"code":500,"status":"application-crash"}'),
        (502, b"<html><body>Bad gateway</body></html>"),
        (201, b'{"code":201,"status":"action-succ'),
    ],
)
def test_ambiguous_vendor_answers_leave_the_order_unknown(
    state_url: str, pm: PmDatabase, status: int, body: bytes
) -> None:
    """A 5xx, a proxy page or a truncated success may have saved the order: unknown, not re-sent."""
    calls: list[httpx.Request] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, content=body)

    clock = Clock()
    settings = make_settings(state_url, pm.url, "https://vendor.test")
    with wired(settings, transport=httpx.MockTransport(vendor)) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        run_cycle(parts, clock)
        clock.now += timedelta(hours=1)
        run_cycle(parts, clock)
        (order,) = _orders(parts.state)
    assert order.state == OrderState.UNKNOWN
    assert len(calls) == 1


def test_recovery_marks_an_expired_sending_lease_unknown(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """An order a dead sender left in `sending` is never re-sent blindly: it becomes unknown."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url, mode="approval")) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        run_cycle(parts, clock)
        with parts.state.begin() as connection:
            connection.execute(
                orders.update().values(
                    state="sending", lease_owner="dead-host:1", lease_until=clock.now
                )
            )
        clock.now += timedelta(minutes=1)
        summary = CycleSummary()
        recover(parts, clock.now, summary)
        (order,) = _orders(parts.state)
    assert summary.recovered == 1
    assert order.state == OrderState.UNKNOWN
    assert sandbox.requests_seen() == 0


def test_dirty_rows_are_quarantined_and_the_cycle_goes_on(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """A row without an id or with a bad date is audited with its column; the others proceed."""
    pm.insert(home(""), home("H9", final_date="31/12/2026"))
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        summary = run_cycle(parts, clock)
        with parts.state.connect() as connection:
            events = audit.query_events(connection, kinds=["source_row_quarantined"])
    assert summary.quarantined == 2
    assert summary.new_properties == 4
    assert {e["detail"]["column"] for e in events} == {
        "external_property_id",
        "construction_final_date",
    }


def test_no_audit_row_contains_the_access_code_or_api_key(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """Lockbox codes reach the vendor but never the audit log; neither does the API key."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url, first_sight="fire")) as parts:
        run_cycle(parts, clock)
        with parts.state.connect() as connection:
            details = [
                json.dumps(dict(r), default=str)
                for r in connection.execute(sa.select(audit_log)).mappings()
            ]
    assert sandbox.orders[0]["property_access"]["access_code"] == SECRET_CODE
    assert details
    assert not any(SECRET_CODE in d or "sandbox-key" in d for d in details)


def test_postgresql_as_the_property_database(
    state_url: str, pg_database: str, sandbox: SandboxServer
) -> None:
    """The source reader streams a PostgreSQL PM database the same way as SQLite."""
    pm = PmDatabase(pg_database)
    try:
        pm.insert(home("P1"), home("P2"))
        clock = Clock()
        with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
            run_cycle(parts, clock)
            pm.set("P2", final_date="2026-11-20")
            summary = run_cycle(parts, clock)
    finally:
        pm.close()
    assert summary.placed == 1
    assert sandbox.orders[0]["external_property_id"] == "P2"
