"""The sandbox sends webhooks like the vendor: in order, retried, dropped; duplicates on demand."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import deliveries
from propready.core.vendor_news import VendorNews, parse_vendor_news
from propready.core.vendor_status import StatusPoint, is_newer
from tests.integration.daemon_support import free_port, wait_until
from tests.integration.webhook_support import CaptureReceiver, running_receiver

KEY = "sandbox-key"
ORDER: dict[str, Any] = {
    "api_key": KEY,
    "external_property_id": "H1",
    "external_order_id": "pr-H1-1",
    "billing_entity_slug": "investment_entity_1",
    "services": [
        {"slug": "photos", "quantity": 25},
        {"slug": "zillow_3d_and_floor_plans", "quantity": 1},
    ],
    "property": {
        "location": {"street": "1 Main St", "city": "Denver", "state": "CO", "postal_code": "80202"}
    },
    "property_access": {
        "vacant": True,
        "method_of_access": "lockbox_code",
        "access_code": "4711-secret",
        "lockbox_location": "porch",
        "onsite_contact_name": "Pat",
        "onsite_contact_phone": "+1 555-555-5555",
    },
}
WALK = [
    "order.received",
    "order.processed",
    "appointment.awaiting_scheduling",
    "appointment.scheduled",
    "order.post_processing",
    "order.delivered",
]


@pytest.fixture
def capture() -> Iterator[CaptureReceiver]:
    receiver = CaptureReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    started: list[SandboxServer] = []

    def start(**overrides: Any) -> SandboxServer:
        config = SandboxConfig.default()
        fields = {**config.__dict__, "webhook_retry_seconds": 0.05, **overrides}
        started.append(SandboxServer(SandboxConfig(**fields)).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


def create(sandbox: SandboxServer, **overrides: Any) -> int:
    response = httpx.post(f"{sandbox.url}/api/v3/orders/create", json={**ORDER, **overrides})
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["order_id"])


def advance(sandbox: SandboxServer, order_id: int, **body: Any) -> httpx.Response:
    return httpx.post(f"{sandbox.url}/_sandbox/advance", json={"order_id": order_id, **body})


def walk_to_delivered(sandbox: SandboxServer, order_id: int) -> None:
    for _ in range(6):
        assert advance(sandbox, order_id).status_code == 200


def test_each_status_step_sends_its_event_in_order(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """received, processed, awaiting_scheduling, scheduled, post_processing, delivered (on_site
    has no documented event), each with its event time."""
    sandbox = start_sandbox(webhook_url=capture.url)
    order_id = create(sandbox)
    walk_to_delivered(sandbox, order_id)
    wait_until("six deliveries", lambda: len(capture.bodies) == 6)
    assert capture.events() == [(order_id, event) for event in WALK]
    assert all("event_datetime" in body for body in capture.bodies)
    assert [body["order_status"] for body in capture.bodies] == [
        "new_request", "ordered", "scheduling", "scheduled", "post_processing", "completed",
    ]  # fmt: skip


def test_the_delivered_payload_is_shaped_like_the_seed_retrieve_example(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """Appointments, links and photos (sequence, caption, URLs, times); retrieve says the same."""
    sandbox = start_sandbox(webhook_url=capture.url)
    order_id = create(sandbox)
    walk_to_delivered(sandbox, order_id)
    wait_until("the delivery", lambda: len(capture.bodies) == 6)
    delivered = capture.bodies[-1]
    (appointment,) = delivered["appointments"]
    assert set(appointment) == {
        "appointment_id", "start_datetime", "end_datetime", "duration_m", "planotech_name",
        "cancelation_reason", "cancelation_notes",
    }  # fmt: skip
    assert set(delivered["links"]) == {"photo_manage_link", "zillow_3d_link"}
    assert len(delivered["photos"]) == 25
    assert set(delivered["photos"][0]) == {
        "sequence", "caption", "full_size_url", "full_size_watermarked_url", "uploaded_at",
        "modified_at",
    }  # fmt: skip
    assert [photo["sequence"] for photo in delivered["photos"]] == list(range(1, 26))
    assert delivered["unable_to_complete_appt"] is False
    retrieved = httpx.post(
        f"{sandbox.url}/api/v3/orders/retrieve", json={"api_key": KEY, "order_id": order_id}
    ).json()["data"]
    assert {k: v for k, v in delivered.items() if k != "event_datetime"} == retrieved
    news = parse_vendor_news(delivered)
    assert isinstance(news, VendorNews)
    assert (news.event, news.status, len(news.photos)) == ("order.delivered", "completed", 25)


def test_the_nested_shape_carries_the_same_news(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """--webhook-shape nested: {event, event_datetime, order: {..., assets: {photos}}}."""
    sandbox = start_sandbox(webhook_url=capture.url, webhook_shape="nested")
    order_id = create(sandbox)
    walk_to_delivered(sandbox, order_id)
    wait_until("the delivery", lambda: len(capture.bodies) == 6)
    delivered = capture.bodies[-1]
    assert set(delivered) == {"event", "event_datetime", "order"}
    assert "photos" not in delivered["order"]
    assert len(delivered["order"]["assets"]["photos"]) == 25
    assert len(delivered["order"]["assets"]["floor_plans"]) == 1
    news = parse_vendor_news(delivered)
    assert isinstance(news, VendorNews)
    assert (news.vendor_order_id, news.event, len(news.photos)) == (
        str(order_id),
        "order.delivered",
        25,
    )
    assert news.event_at is not None


def test_vendor_cancel_and_unable_to_complete_through_the_control_route(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """`to: unable_to_complete` reopens scheduling; the next step rebooks; `to: canceled` ends."""
    sandbox = start_sandbox(webhook_url=capture.url)
    order_id = create(sandbox)
    for _ in range(4):  # to on_site
        advance(sandbox, order_id)
    unable = advance(sandbox, order_id, to="unable_to_complete", reason="property_not_ready")
    assert unable.json()["data"]["order_status"] == "pending_reschedule"
    rebooked = advance(sandbox, order_id).json()["data"]
    assert rebooked["order_status"] == "scheduled"
    assert [a["cancelation_reason"] for a in rebooked["appointments"]] == [
        "unable_to_complete",
        None,
    ]
    canceled = advance(sandbox, order_id, to="canceled", reason="outside_service_area")
    assert canceled.json()["data"]["order_cancelation_reason"] == "outside_service_area"
    assert advance(sandbox, order_id, to="teleported").json()["errors"] == [
        {"attr": "to", "message": "unrecognized"}
    ]
    wait_until("the deliveries", lambda: len(capture.bodies) == 7)
    events = [event for _, event in capture.events()]
    assert events[-3:] == [
        "appointment.unable_to_complete",
        "appointment.scheduled",
        "order.canceled",
    ]
    unable_body = capture.bodies[-3]
    assert unable_body["unable_to_complete_appt"] is True
    assert unable_body["unable_to_complete_appt_reason"] == "property_not_ready"


def test_a_client_cancel_sends_order_canceled_too(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """A cancel through the API is news on the subscription as well."""
    sandbox = start_sandbox(webhook_url=capture.url)
    order_id = create(sandbox)
    cancel = {
        "api_key": KEY,
        "order_id": order_id,
        "cancelation_reason": "client_requested_cancelation",
        "notes": "tenant stayed",
    }
    assert httpx.post(f"{sandbox.url}/api/v3/orders/cancel", json=cancel).status_code == 200
    wait_until("two deliveries", lambda: len(capture.bodies) == 2)
    assert capture.events()[-1] == (order_id, "order.canceled")


def test_a_failing_delivery_holds_back_the_later_ones_until_it_gets_through(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """Two 500s: the first delivery is retried every retry_seconds; nothing overtakes it."""
    capture.script = [500, 500]
    sandbox = start_sandbox(webhook_url=capture.url, webhook_retry_seconds=0.3)
    order_id = create(sandbox)
    advance(sandbox, order_id)
    advance(sandbox, order_id)
    wait_until("three deliveries", lambda: len(capture.bodies) == 3, timeout=10)
    assert capture.answers == [500, 500, 200, 200, 200]
    assert sandbox.webhooks is not None
    log = sandbox.webhooks.status()["log"]
    assert [(entry["seq"], entry["attempt"]) for entry in log] == [
        (1, 1), (1, 2), (1, 3), (2, 1), (3, 1),
    ]  # fmt: skip
    assert capture.events() == [(order_id, event) for event in WALK[:3]]


def test_a_delivery_is_dropped_after_the_last_attempt_and_the_next_one_goes(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """After `attempts` failures the vendor gives up (it would e-mail); later ones go on."""
    capture.script = [503, 503, 503]
    with structlog.testing.capture_logs() as logs:
        sandbox = start_sandbox(webhook_url=capture.url, webhook_attempts=3)
        order_id = create(sandbox)
        advance(sandbox, order_id)
        wait_until("the second delivery", lambda: len(capture.bodies) == 1)
    assert capture.events() == [(order_id, "order.processed")]
    dropped = [entry for entry in logs if entry["event"] == "sandbox.webhook_dropped"]
    assert len(dropped) == 1
    assert dropped[0]["seq"] == 1
    assert "would email" in dropped[0]["note"]


def test_duplicates_on_purpose(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """--webhook-duplicates 2: every body arrives three times."""
    sandbox = start_sandbox(webhook_url=capture.url, webhook_duplicates=2)
    order_id = create(sandbox)
    advance(sandbox, order_id)
    wait_until("six bodies", lambda: len(capture.bodies) == 6)
    assert (
        capture.events() == [(order_id, "order.received")] * 3 + [(order_id, "order.processed")] * 3
    )
    assert capture.bodies[0] == capture.bodies[1] == capture.bodies[2]


def test_out_of_order_on_purpose(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """--webhook-out-of-order: of two queued deliveries the newer one arrives first."""
    sandbox = start_sandbox(webhook_url=capture.url, webhook_out_of_order=True)
    control = f"{sandbox.url}/_sandbox/webhooks"
    httpx.post(control, json={"pause": True})  # both queued before either is sent, however slow
    order_id = create(sandbox)
    advance(sandbox, order_id)
    httpx.post(control, json={"pause": False})
    wait_until("two bodies", lambda: len(capture.bodies) == 2)
    assert capture.events() == [(order_id, "order.processed"), (order_id, "order.received")]


def test_the_control_route_pauses_reverses_and_resends(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """POST /_sandbox/webhooks {pause, reverse, resend}; GET shows the queue and the log."""
    sandbox = start_sandbox(webhook_url=capture.url)
    control = f"{sandbox.url}/_sandbox/webhooks"
    assert httpx.post(control, json={"pause": True}).status_code == 200
    order_id = create(sandbox)
    advance(sandbox, order_id)
    advance(sandbox, order_id)
    queued = httpx.get(control).json()["data"]["queued"]
    assert [entry["seq"] for entry in queued] == [1, 2, 3]
    httpx.post(control, json={"reverse": True, "pause": False})
    wait_until("three bodies", lambda: len(capture.bodies) == 3)
    httpx.post(control, json={"resend": 1})
    wait_until("the resent body", lambda: len(capture.bodies) == 4)
    assert [event for _, event in capture.events()] == [
        "appointment.awaiting_scheduling",
        "order.processed",
        "order.received",
        "order.received",
    ]
    assert httpx.post(control, json={"resend": 99}).status_code == 400
    log = httpx.get(control).json()["data"]["log"]
    assert [entry["seq"] for entry in log] == [3, 2, 1, 1]


def test_the_control_route_without_a_subscription_is_refused(
    start_sandbox: Callable[..., SandboxServer],
) -> None:
    """No --webhook-url: /_sandbox/webhooks says not_configured."""
    sandbox = start_sandbox()
    answer = httpx.get(f"{sandbox.url}/_sandbox/webhooks")
    assert answer.json()["errors"] == [{"attr": "webhooks", "message": "not_configured"}]


def test_a_subscription_can_choose_its_events(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """--webhook-event: only the subscribed events are sent."""
    sandbox = start_sandbox(
        webhook_url=capture.url,
        webhook_events=frozenset({"appointment.scheduled", "order.delivered"}),
    )
    walk_to_delivered(sandbox, create(sandbox))
    wait_until("two bodies", lambda: len(capture.bodies) == 2)
    time.sleep(0.2)
    assert [event for _, event in capture.events()] == ["appointment.scheduled", "order.delivered"]


def test_auto_advance_walks_every_order_to_delivered(
    start_sandbox: Callable[..., SandboxServer], capture: CaptureReceiver
) -> None:
    """--auto-advance: one step per interval per order, to delivered, then it stops."""
    sandbox = start_sandbox(webhook_url=capture.url, auto_advance_seconds=0.05)
    first = create(sandbox)
    second = create(sandbox, external_property_id="H2", external_order_id="pr-H2-1")
    wait_until("both delivered", lambda: len(capture.bodies) == 12, timeout=15)
    for order_id in (first, second):
        assert [event for oid, event in capture.events() if oid == order_id] == WALK
    assert {order["order_status"] for order in sandbox.orders} == {"completed"}


@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_sandbox_to_serve_end_to_end(
    start_sandbox: Callable[..., SandboxServer], state_url: str, shape: str
) -> None:
    """An order walked by --auto-advance reaches order.delivered at the receiver, stored with
    photos and links, every step in order, the access code masked."""
    with running_receiver(state_url) as receiver:
        sandbox = start_sandbox(
            webhook_url=receiver.webhook_url, webhook_shape=shape, auto_advance_seconds=0.05
        )
        order_id = create(sandbox)
        wait_until("the delivered news", lambda: len(receiver.rows()) == 6, timeout=20)
        rows = receiver.rows()
    assert [row.event for row in rows] == WALK
    assert {row.vendor_order_id for row in rows} == {str(order_id)}
    current = None
    for row in rows:
        assert is_newer(current, row.status_point)  # each step is news over the one before
        current = row.status_point
    delivered = rows[-1].news()
    assert isinstance(delivered, VendorNews)
    assert len(delivered.photos) == 25
    assert set(delivered.links) == {"photo_manage_link", "zillow_3d_link"}
    assert delivered.external_order_id == "pr-H1-1"
    assert "4711-secret" not in repr([row.body for row in rows])
    assert current == StatusPoint("completed", rows[-1].event_at)


def test_receiver_down_while_the_sandbox_retries_then_up_nothing_lost_in_order(
    start_sandbox: Callable[..., SandboxServer], state_url: str
) -> None:
    """Nothing listens: the first delivery is retried and the rest wait; once serve is up,
    every delivery arrives, in order."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/planomatic/current-webhook-token-0123456789"
    sandbox = start_sandbox(webhook_url=url, webhook_retry_seconds=0.2, webhook_attempts=100)
    order_id = create(sandbox)
    for _ in range(3):
        advance(sandbox, order_id)
    assert sandbox.webhooks is not None
    webhooks = sandbox.webhooks
    wait_until("two failed tries", lambda: len(webhooks.status()["log"]) >= 2)
    assert {entry["seq"] for entry in webhooks.status()["log"]} == {1}
    with running_receiver(state_url, listen=f"127.0.0.1:{port}") as receiver:
        assert webhooks.wait_idle(timeout=10)
        rows = receiver.rows()
        with receiver.engine.connect() as connection:
            assert deliveries.count_by_state(connection) == {"pending": 4}
    assert [row.event for row in rows] == WALK[:4]
    assert [row.id for row in rows] == sorted(row.id for row in rows)


def test_the_cli_sends_webhooks_and_stops_on_sigterm(
    tmp_path: Path, capture: CaptureReceiver
) -> None:
    """`propready sandbox --webhook-url ... --auto-advance 0.1` walks an order to delivered."""
    url_file = tmp_path / "url"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "propready", "sandbox", "--port", "0", "--url-file",
            str(url_file), "--webhook-url", capture.url, "--auto-advance", "0.1",
            "--webhook-retry-seconds", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )  # fmt: skip
    try:
        base = wait_until("the sandbox URL", lambda: url_file.exists() and url_file.read_text())
        response = httpx.post(f"{base}/api/v3/orders/create", json=ORDER)
        assert response.status_code == 201
        wait_until("order.delivered", lambda: len(capture.bodies) == 6, timeout=20)
        assert capture.events()[-1][1] == "order.delivered"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
