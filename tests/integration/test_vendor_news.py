"""Applying stored webhook deliveries to orders (service/vendor_news.py) on SQLite and PostgreSQL.

Orders are placed at the real sandbox through a real cycle; deliveries are stored as
`propready serve` stores them (service/webhook_intake.py) and applied by the real step.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, deliveries, outbox
from propready.adapters.store.audit_views import read_view
from propready.adapters.store.deliverables import deliverables_for
from propready.core.orders import Order, OrderState
from propready.core.webhook_delivery import DeliveryState
from propready.service import Components, CycleSummary, run_cycle
from propready.service.attention import current_items
from propready.service.vendor_news import apply_news
from propready.service.webhook_intake import store_delivery
from tests.integration.cycle_support import REPO, Clock, PmDatabase, home, make_settings, wired

T1 = "2026-11-28T10:00:00.000+00:00"
T2 = "2026-11-29T10:00:00.000+00:00"
T3 = "2026-11-30T10:00:00.000+00:00"
LINKS = {
    "photo_manage_link": "https://go.planomatic.example/planox/manage_photos/1",
    "zillow_3d_link": "https://www.zillow.example/view-3d-home/1",
}
PHOTOS = [
    {
        "sequence": 1,
        "caption": "Front View",
        "full_size_url": "https://cdn.planomatic.example/1-1.jpg",
        "full_size_watermarked_url": "https://cdn.planomatic.example/1-1/cw.jpg",
        "uploaded_at": T2,
        "modified_at": T3,
    },
    {
        "sequence": 2,
        "caption": "Kitchen",
        "full_size_url": "https://cdn.planomatic.example/1-2.jpg",
    },
]


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(home("H1"), home("H2"))
    yield database
    database.close()


@pytest.fixture
def parts(state_url: str, pm: PmDatabase, sandbox: SandboxServer) -> Iterator[Components]:
    with wired(make_settings(state_url, pm.url, sandbox.url)) as components:
        yield components


def place_orders(parts: Components, pm: PmDatabase, clock: Clock) -> dict[str, Order]:
    """Both homes become ready and their orders are placed at the sandbox."""
    run_cycle(parts, clock)
    pm.set("H1", status="Vacant Unrented Ready")
    pm.set("H2", status="Vacant Unrented Ready")
    clock.now += timedelta(minutes=5)
    run_cycle(parts, clock)
    return orders_by_home(parts)


def orders_by_home(parts: Components) -> dict[str, Order]:
    with parts.state.connect() as connection:
        return {o.external_property_id: o for o in outbox.list_orders(connection)}


def store(parts: Components, clock: Clock, body: dict[str, Any] | bytes) -> int | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return store_delivery(parts.state, raw, clock.now).delivery_id


def news(order: Order, status: str, when: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": int(order.vendor_order_id or 0),
        "external_order_id": order.external_order_id,
        "order_status": status,
        **extra,
    }
    if when is not None:
        body["event_datetime"] = when
    return body


def kinds(parts: Components, kind: str) -> list[dict[str, Any]]:
    with parts.state.connect() as connection:
        return audit.query_events(connection, kinds=[kind])


def apply(parts: Components, clock: Clock) -> CycleSummary:
    summary = CycleSummary()
    apply_news(parts, clock, summary)
    return summary


def delivered_body(order: Order) -> dict[str, Any]:
    return news(
        order,
        "completed",
        T3,
        event="order.delivered",
        links=LINKS,
        photos=PHOTOS,
        services=[{"slug": "photos", "quantity": 25, "price": 12500}],
    )


def test_the_same_delivery_ten_times_changes_the_order_once(
    parts: Components, pm: PmDatabase
) -> None:
    """Stored once, replayed nine times: one status change, one delivery, the same deliverables."""
    clock = Clock()
    h1 = place_orders(parts, pm, clock)["H1"]
    body = delivered_body(h1)
    first = store(parts, clock, body)
    assert first is not None
    for _ in range(9):
        assert store(parts, clock, body) is None  # the receiver's dedupe
    summaries = [apply(parts, clock)]
    for _ in range(9):
        with parts.state.begin() as connection:
            assert deliveries.replay(connection, delivery_id=first) == 1
        summaries.append(apply(parts, clock))
    assert [s.news_applied for s in summaries] == [1] + [0] * 9
    assert [s.news_unchanged for s in summaries] == [0] + [1] * 9
    assert len(kinds(parts, "order_status_changed")) == 1
    (done,) = kinds(parts, "order_delivered")
    assert done["detail"]["links"] == sorted(LINKS)
    assert done["detail"]["photos"] == 2
    assert len(kinds(parts, "order_price_reported")) == 1
    with parts.state.connect() as connection:
        order = outbox.get_order(connection, h1.id)
        shown = deliverables_for(connection, h1.id)
    assert order is not None
    assert order.vendor_status == "completed"
    assert order.delivered_at is not None
    assert order.delivered_at.isoformat().startswith("2026-11-30")
    assert order.vendor_price_cents == 12500
    assert order.vendor_news_at == clock.now
    assert [(d.kind, d.name, d.sequence) for d in shown] == [
        ("link", "photo_manage_link", 0),
        ("link", "zillow_3d_link", 0),
        ("photo", "photo", 1),
        ("photo", "photo", 2),
    ]
    assert shown[2].caption == "Front View"
    assert shown[2].url == PHOTOS[0]["full_size_url"]


def test_out_of_order_news_never_moves_a_status_back(parts: Components, pm: PmDatabase) -> None:
    """Delivered (later event) first, scheduled (earlier event) after: the order stays delivered;
    without event times the rank decides the same way."""
    clock = Clock()
    orders = place_orders(parts, pm, clock)
    h1, h2 = orders["H1"], orders["H2"]
    store(parts, clock, delivered_body(h1))
    store(parts, clock, news(h2, "post_processing", None))
    assert apply(parts, clock).news_applied == 2
    store(parts, clock, news(h1, "scheduled", T1, event="appointment.scheduled", links={}))
    store(parts, clock, news(h2, "scheduled", None))
    summary = apply(parts, clock)
    assert (summary.news_applied, summary.news_unchanged) == (0, 2)
    after = orders_by_home(parts)
    assert after["H1"].vendor_status == "completed"
    assert after["H2"].vendor_status == "post_processing"
    changes = [
        (c["external_order_id"], c["detail"]["to"]) for c in kinds(parts, "order_status_changed")
    ]
    assert (h1.external_order_id, "scheduled") not in changes
    assert (h2.external_order_id, "scheduled") not in changes
    with parts.state.connect() as connection:
        links = [d.name for d in deliverables_for(connection, h1.id) if d.kind == "link"]
    assert links == sorted(LINKS)  # the older news did not take the links away


def test_an_unknown_order_named_by_a_delivery_is_resolved_to_placed(
    parts: Components, pm: PmDatabase
) -> None:
    """An ambiguous send left the order unknown without a vendor id; the vendor's news names its
    external_order_id: the order is placed, with the vendor's id, audited."""
    clock = Clock()
    h1 = place_orders(parts, pm, clock)["H1"]
    with parts.state.begin() as connection:
        connection.execute(
            sa.text("UPDATE orders SET state = 'unknown', vendor_order_id = NULL WHERE id = :id"),
            {"id": h1.id},
        )
    store(parts, clock, news(h1, "scheduled", T1))
    assert apply(parts, clock).news_applied == 1
    after = orders_by_home(parts)["H1"]
    assert after.state == OrderState.PLACED
    assert after.vendor_order_id == h1.vendor_order_id
    assert after.vendor_status == "scheduled"
    (resolved,) = kinds(parts, "order_resolved")
    assert resolved["detail"]["from"] == "unknown"
    assert resolved["external_order_id"] == h1.external_order_id


def test_a_delivery_for_no_order_is_kept_unmatched_and_applied_once_the_order_is_placed(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """Mode approval: the order waits for a person; its news is kept unmatched, then applied
    after it is approved and placed. A delivery for an order we never placed stays flagged."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url, mode="approval")) as parts:
        orders = place_orders(parts, pm, clock)
        h1 = orders["H1"]
        assert h1.state == OrderState.AWAITING_APPROVAL
        store(parts, clock, {"external_order_id": h1.external_order_id, "order_status": "ordered"})
        store(parts, clock, {"order_id": 987654, "order_status": "scheduled"})
        summary = apply(parts, clock)
        assert summary.news_unmatched == 2
        with parts.state.connect() as connection:
            rows = deliveries.list_deliveries(connection)
        assert {r.state for r in rows} == {DeliveryState.UNMATCHED}
        reasons = sorted(str(r.problem) for r in rows)
        assert "is awaiting_approval" in reasons[1]
        assert "no order of ours has vendor order id 987654" in reasons[0]
        with parts.state.begin() as connection:
            assert outbox.approve(connection, h1.id, clock.now)
        clock.now += timedelta(minutes=1)
        summary = run_cycle(parts, clock)  # sends it, then matches and applies its news
        assert summary.news_requeued == 1
        assert summary.news_applied == 1
        after = orders_by_home(parts)["H1"]
        assert after.state == OrderState.PLACED
        assert after.vendor_status == "ordered"
        with parts.state.connect() as connection:
            states = sorted(r.state.value for r in deliveries.list_deliveries(connection))
        assert states == ["applied", "unmatched"]


def test_malformed_news_is_never_applied(parts: Components, pm: PmDatabase) -> None:
    clock = Clock()
    h1 = place_orders(parts, pm, clock)["H1"]
    store(parts, clock, b"{not json")
    store(parts, clock, {"order_status": "completed", "links": LINKS})  # names no order
    store(parts, clock, [news(h1, "completed", T3)])  # not an object
    summary = apply(parts, clock)
    assert summary.news_applied == summary.news_unchanged == 0
    with parts.state.connect() as connection:
        rows = deliveries.list_deliveries(connection)
    assert [r.state for r in rows] == [DeliveryState.MALFORMED] * 3
    assert orders_by_home(parts)["H1"].vendor_status == "new_request"
    assert kinds(parts, "order_status_changed") == []


def test_a_vendor_cancel_with_notify_frees_the_window_and_waits_for_a_person(
    parts: Components, pm: PmDatabase
) -> None:
    clock = Clock()
    h1 = place_orders(parts, pm, clock)["H1"]
    body = news(
        h1,
        "canceled",
        T1,
        event="order.canceled",
        order_cancelation_reason="outside_service_area",
        order_cancelation_notes="No PlanOtech near this home",
    )
    store(parts, clock, body)
    summary = apply(parts, clock)
    assert summary.vendor_canceled == 1
    after = orders_by_home(parts)["H1"]
    assert after.state == OrderState.CANCELED
    assert after.window_end <= clock.now
    (canceled,) = kinds(parts, "order_canceled_by_vendor")
    assert canceled["detail"]["on_vendor_cancel"] == "notify"
    assert canceled["detail"]["reason"] == "outside_service_area: No PlanOtech near this home"
    assert kinds(parts, "reorder_requested") == []
    with parts.state.connect() as connection:
        items = current_items(connection, parts.settings, clock.now)
    (item,) = [i for i in items if i.kind == "vendor_canceled"]
    assert "outside_service_area" in item.what


def test_unable_to_complete_is_audited_with_the_vendors_reason(
    parts: Components, pm: PmDatabase
) -> None:
    clock = Clock()
    h1 = place_orders(parts, pm, clock)["H1"]
    store(parts, clock, news(h1, "scheduled", T1, event="appointment.scheduled"))
    store(
        parts,
        clock,
        news(
            h1,
            "pending_reschedule",
            T2,
            event="appointment.unable_to_complete",
            unable_to_complete_appt=True,
            unable_to_complete_appt_reason="property_not_ready",
        ),
    )
    apply(parts, clock)
    (unable,) = kinds(parts, "order_unable_to_complete")
    assert unable["detail"]["reason"] == "property_not_ready"
    after = orders_by_home(parts)["H1"]
    assert (after.state, after.vendor_status) == (OrderState.PLACED, "pending_reschedule")


def reorder_rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(REPO / "rules", folder)
    path = folder / "readiness.yaml"
    text = path.read_text().replace(
        "    duplicate_window_hours: 720\n",
        "    duplicate_window_hours: 720\n    on_vendor_cancel: reorder\n",
    )
    path.write_text(text)
    return folder


def test_a_vendor_cancel_with_reorder_orders_the_home_again_once_per_readiness(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """The rule says reorder: the home is ordered again through the rules and the window,
    audited with the vendor's reason; when the vendor cancels the new order too, nothing is
    re-ordered automatically a second time (a person decides)."""
    clock = Clock()
    settings = make_settings(state_url, pm.url, sandbox.url)
    settings = settings.model_copy(
        update={"rules": settings.rules.model_copy(update={"path": reorder_rules(tmp_path)})}
    )
    with wired(settings) as parts:
        h1 = place_orders(parts, pm, clock)["H1"]
        assert h1.rule_id == "sfr-full-marketing"
        store(
            parts,
            clock,
            news(h1, "canceled", T1, order_cancelation_reason="outside_service_area"),
        )
        summary = apply(parts, clock)
        assert summary.vendor_reordered == 1
        (request,) = kinds(parts, "reorder_requested")
        assert request["detail"]["outcome"] == "ordered"
        assert request["detail"]["vendor_canceled_order"] == h1.external_order_id
        assert "outside_service_area" in request["detail"]["reason"]
        with parts.state.connect() as connection:
            homes = [o for o in outbox.list_orders(connection) if o.external_property_id == "H1"]
        assert [o.state for o in homes] == [OrderState.CANCELED, OrderState.PLANNED]
        second = homes[1]
        assert second.event_id == h1.event_id
        clock.now += timedelta(minutes=1)
        run_cycle(parts, clock)  # sends the new order
        second = orders_by_home_all(parts)[second.id]
        assert second.state == OrderState.PLACED
        store(parts, clock, news(second, "canceled", T2, order_cancelation_reason="again"))
        summary = apply(parts, clock)
        assert summary.vendor_reordered == 0
        requests = kinds(parts, "reorder_requested")
        assert [r["detail"]["outcome"] for r in requests] == ["ordered", "refused"]
        assert "already re-ordered once" in requests[1]["detail"]["why"]
        apply_news(parts, clock, CycleSummary())  # the catch-up finds nothing left to do
        assert len(kinds(parts, "reorder_requested")) == 2


def orders_by_home_all(parts: Components) -> dict[int, Order]:
    with parts.state.connect() as connection:
        return {o.id: o for o in outbox.list_orders(connection)}


def test_audit_deliveries_gives_readiness_placed_and_delivered_times(
    parts: Components, pm: PmDatabase
) -> None:
    clock = Clock()
    orders = place_orders(parts, pm, clock)
    h1 = orders["H1"]
    store(parts, clock, delivered_body(h1))
    apply(parts, clock)
    with parts.state.connect() as connection:
        rows = read_view(connection, "audit_deliveries", order_by="order_id")
    assert [r["external_property_id"] for r in rows] == ["H1", "H2"]
    first, second = rows
    assert first["trigger_name"] == "vacant_ready"
    assert first["ready_at"] <= first["placed_at"] < first["delivered_at"]
    assert first["delivered_at"].isoformat() == "2026-11-30T10:00:00+00:00"
    expected = (first["delivered_at"] - first["ready_at"]).total_seconds() / 3600
    assert first["hours_ready_to_delivered"] == pytest.approx(expected, abs=0.01)
    assert second["delivered_at"] is None
    assert second["hours_placed_to_delivered"] is None
