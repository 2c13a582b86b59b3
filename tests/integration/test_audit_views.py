"""Every analyst view answers exactly on a known history, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import audit
from propready.adapters.store.audit_views import VIEW_TIMESTAMPS, read_view
from propready.adapters.store.engine import create_state_engine
from propready.service import run_cycle
from tests.integration.audit_support import T0
from tests.integration.cycle_support import (
    API_KEY,
    SECRET_CODE,
    Clock,
    PmDatabase,
    home,
    make_settings,
    wired,
)

DAY1 = date(2026, 11, 27)
DAY2 = date(2026, 11, 28)


@pytest.fixture
def history(state_url: str, tmp_path: Path) -> Iterator[sa.Engine]:
    """A week of real cycles against the sandbox: placed, blocked, unmatched, rejected, unknown."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(
        home("H1"),
        home("H2", status="Vacant Unrented Ready"),
        home("H3", kind="condo_townhouse", beds=2),
        home("H4", status="Under Construction"),
        home("H5", beds=2),
    )
    clock = Clock()  # 2026-11-27 15:00 UTC
    with SandboxServer(SandboxConfig.default()) as sandbox:
        settings = make_settings(state_url, pm.url, sandbox.url)
        with wired(settings) as parts:
            run_cycle(parts, clock)  # first sight: nothing
            steps: list[tuple[timedelta, str, dict[str, Any]]] = [
                (timedelta(hours=1), "H1", {"status": "Vacant Unrented Ready"}),  # placed
                (timedelta(0), "H3", {"final_date": "2026-11-20"}),  # no rule for this trigger
                (timedelta(hours=1), "H1", {"status": "Occupied"}),
                (timedelta(hours=1), "H1", {"status": "Vacant Unrented Ready"}),  # blocked
                (timedelta(days=1), "H3", {"status": "Vacant Unrented Ready"}),  # placed, day 2
            ]
            for step, code, values in steps:
                clock.now += step
                pm.set(code, **values)
                run_cycle(parts, clock)

    def refuse(request: httpx.Request) -> httpx.Response:
        body = (
            b'{"code":400,"status":"validation-error","errors":'
            b'[{"attr":"billing_entity_slug","message":"unauthorized"}]}'
        )
        return httpx.Response(400, content=body)

    with wired(settings, transport=httpx.MockTransport(refuse)) as parts:
        pm.set("H4", status="Vacant Unrented Ready")
        run_cycle(parts, clock)  # the vendor refuses the billing entity: rejected

    def crash(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content=b'{"code":500,"status":"application-crash"}')

    with wired(settings, transport=httpx.MockTransport(crash)) as parts:
        pm.set("H5", status="Vacant Unrented Ready")
        run_cycle(parts, clock)  # ambiguous: unknown
    pm.close()
    engine = create_state_engine(state_url)
    yield engine
    engine.dispose()


def _view(engine: sa.Engine, name: str, order_by: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return read_view(connection, name, order_by=order_by)


def _order_ids(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT external_property_id, external_order_id FROM orders"
        ).all()
    return {str(p): str(o) for p, o in rows}


def test_orders_by_day_entity_and_service(history: sa.Engine) -> None:
    """Placed orders count per UTC day, billing entity and service, with quantities."""
    rows = _view(history, "audit_orders_by_day", "day, service_slug")
    assert rows == [
        {
            "day": DAY1,
            "billing_entity_slug": "investment_entity_1",
            "service_slug": "photos",
            "orders": 1,
            "quantity": 25,
        },
        {
            "day": DAY1,
            "billing_entity_slug": "investment_entity_1",
            "service_slug": "zillow_3d_and_floor_plans",
            "orders": 1,
            "quantity": 1,
        },
        {
            "day": DAY2,
            "billing_entity_slug": "investment_entity_1",
            "service_slug": "photos",
            "orders": 1,
            "quantity": 10,
        },
    ]


def test_decisions_by_rule_and_outcome(history: sa.Engine) -> None:
    """Each readiness event counts once, under the rule that decided it and its outcome."""
    rows = _view(history, "audit_decisions_by_rule", "day, trigger_name, outcome, rule_id")
    assert [tuple(r.values()) for r in rows] == [
        (DAY1, "construction_final", None, "no_rule_matched", 1),
        (DAY1, "vacant_ready", "sfr-full-marketing", "duplicate_blocked", 1),
        (DAY1, "vacant_ready", "sfr-full-marketing", "order_created", 1),
        (DAY2, "vacant_ready", "attached-homes", "order_created", 1),
        (DAY2, "vacant_ready", "sfr-full-marketing", "order_created", 1),
        (DAY2, "vacant_ready", "sfr-small", "order_created", 1),
    ]


def test_duplicates_blocked_name_the_blocking_order(history: sa.Engine) -> None:
    """The blocked plan names the earlier order that held the window, and that order's state."""
    (row,) = _view(history, "audit_duplicates_blocked", "blocked_at")
    assert row["external_property_id"] == "H1"
    assert row["blocking_external_order_id"] == _order_ids(history)["H1"]
    assert row["blocking_order_state"] == "placed"
    assert row["window_hours"] == 720
    assert row["blocked_at"] == Clock().now + timedelta(hours=3)
    assert row["blocking_order_created_at"].startswith("2026-11-27T16:00:00")


def test_rejections_by_field(history: sa.Engine) -> None:
    """A 400 is counted under each field the vendor named."""
    rows = _view(history, "audit_rejections_by_field", "field")
    assert [(r["field"], r["message"], r["rejections"], r["orders"]) for r in rows] == [
        ("billing_entity_slug", "unauthorized", 1, 1)
    ]
    (detail,) = _view(history, "audit_rejections", "rejected_at")
    assert (detail["external_property_id"], detail["status"]) == ("H4", "validation-error")


def test_readiness_to_placed_order(history: sa.Engine) -> None:
    """Placed orders with the time from their trigger firing to placement (same cycle: 0 s)."""
    rows = _view(history, "audit_readiness_to_order", "placed_at")
    assert [(r["external_property_id"], r["trigger_name"]) for r in rows] == [
        ("H1", "vacant_ready"),
        ("H3", "vacant_ready"),
    ]
    assert [float(r["seconds_to_placed"]) for r in rows] == [0.0, 0.0]


def test_orders_currently_unknown(history: sa.Engine) -> None:
    """The order whose create call got a 500 is listed as unknown, with since when and why."""
    (row,) = _view(history, "audit_orders_unknown", "order_id")
    assert row["external_order_id"] == _order_ids(history)["H5"]
    assert row["unknown_since"] == Clock().now + timedelta(days=1, hours=3)
    assert "500" in row["reason"]


def test_no_view_shows_the_access_code_or_api_key(history: sa.Engine) -> None:
    """Nothing an analyst can select from the views contains a lockbox code or the API key."""
    for name in VIEW_TIMESTAMPS:
        text = json.dumps(_view(history, name, "1"), default=str)
        assert SECRET_CODE not in text, name
        assert API_KEY not in text, name


def _record_order(
    connection: sa.Connection, event_id: int, order_id: int, fired_after: timedelta
) -> None:
    common = {"external_property_id": f"P{order_id}", "event_id": event_id, "rule_id": "r1"}
    audit.record(
        connection,
        "trigger_fired",
        T0 + fired_after,
        trigger_name="vacant_ready",
        detail={"kind": "rising_edge"},
        **common,
    )
    audit.record(connection, "rule_matched", T0 + fired_after, **common)
    audit.record(
        connection,
        "order_created",
        T0 + fired_after,
        order_id=order_id,
        external_order_id=f"PR-{order_id}",
        detail={
            "billing_entity_slug": "entity_b",
            "services": [{"slug": "photos", "quantity": 12}],
        },
        **common,
    )


def test_views_on_a_recorded_history(state_engine: sa.Engine) -> None:
    """Latency to the millisecond, several field errors, odd details and new kinds are handled."""
    with state_engine.begin() as connection:
        _record_order(connection, 1, 1, timedelta(0))
        audit.record(
            connection,
            "order_placed",
            T0 + timedelta(minutes=5, seconds=30, milliseconds=250),
            order_id=1,
            external_order_id="PR-1",
            event_id=1,
        )
        audit.record(connection, "order_status_changed", T0 + timedelta(hours=1), order_id=1)
        _record_order(connection, 2, 2, timedelta(hours=1))
        errors = [
            {"attr": "postal_code", "message": "invalid"},
            {"attr": "bedrooms", "message": "required"},
        ]
        for order_id, detail in ((2, {"status": 400, "errors": errors}), (3, {"errors": "?"})):
            audit.record(
                connection,
                "order_rejected",
                T0 + timedelta(hours=2),
                order_id=order_id,
                detail=detail,
            )
        audit.record(connection, "trigger_fired", T0, event_id=9, trigger_name="vacant_ready")
    (latency,) = _view(state_engine, "audit_readiness_to_order", "order_id")
    assert float(latency["seconds_to_placed"]) == 330.25
    assert latency["billing_entity_slug"] == "entity_b"
    by_field = _view(state_engine, "audit_rejections_by_field", "field")
    assert [(r["field"], r["message"], r["rejections"]) for r in by_field] == [
        ("bedrooms", "required", 1),
        ("postal_code", "invalid", 1),
        (None, None, 1),
    ] or [(r["field"], r["message"], r["rejections"]) for r in by_field] == [
        (None, None, 1),
        ("bedrooms", "required", 1),
        ("postal_code", "invalid", 1),
    ]  # NULLs sort last on PostgreSQL, first on SQLite
    decisions = _view(state_engine, "audit_decisions", "event_id")
    assert [(d["event_id"], d["outcome"]) for d in decisions] == [
        (1, "order_created"),
        (2, "order_created"),
        (9, "undecided"),
    ]
    with state_engine.connect() as connection:
        month = read_view(
            connection,
            "audit_orders_by_day",
            since=T0 - timedelta(days=1),
            until=T0 + timedelta(days=1),
        )
        later = read_view(connection, "audit_orders_by_day", since=T0 + timedelta(days=1))
    assert [(r["day"], r["orders"], r["quantity"]) for r in month] == [(T0.date(), 1, 12)]
    assert later == []
