"""`propready serve`'s webhook listener over real HTTP: what is stored, acknowledged or refused."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
import structlog

from propready.adapters.store import deliveries, migrate
from propready.adapters.store.engine import create_state_engine
from propready.core.vendor_status import StatusPoint, is_newer
from propready.core.webhook_delivery import DeliveryState
from tests.integration.daemon_support import PrivatePostgres
from tests.integration.webhook_support import (
    OLD_TOKEN,
    TOKEN,
    WEBHOOK_PATH,
    Receiver,
    delivery,
    running_receiver,
)

SCHEDULED = delivery(
    100001,
    "scheduled",
    "2026-12-01T10:00:00.000+00:00",
    event="appointment.scheduled",
    external_order_id="pr-H1-1",
    property_access={"access_code": "4711-secret", "method_of_access": "lockbox_code"},
)


@pytest.fixture
def receiver(state_url: str) -> Iterator[Receiver]:
    with running_receiver(state_url) as running:
        yield running


def test_a_delivery_is_committed_before_it_is_acknowledged(
    receiver: Receiver, state_url: str
) -> None:
    """The 200 comes after the commit: another connection sees the row at once, masked."""
    response = receiver.post(SCHEDULED)
    assert response.status_code == 200
    assert response.json()["status"] == "stored"
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            (row,) = deliveries.list_deliveries(connection)
            raw = connection.execute(sa.text("SELECT body FROM webhook_delivery")).scalar()
    finally:
        engine.dispose()
    assert row.id == response.json()["id"]
    assert (row.state, row.vendor_order_id, row.external_order_id, row.event) == (
        DeliveryState.PENDING,
        "100001",
        "pr-H1-1",
        "appointment.scheduled",
    )
    assert "4711-secret" not in json.dumps(raw)
    assert receiver.outcome_count("stored") == 1


def test_the_token_may_come_in_the_query_and_the_retired_token_still_works(
    receiver: Receiver,
) -> None:
    """?token= is accepted as well as the path; during a rotation the previous token is too."""
    query = httpx.post(
        f"{receiver.url}{WEBHOOK_PATH}", params={"token": TOKEN}, content=SCHEDULED, timeout=10
    )
    slash = httpx.post(
        f"{receiver.url}{WEBHOOK_PATH}/", params={"token": TOKEN}, content=delivery(7, "ordered")
    )
    retired = receiver.post(delivery(100002, "ordered"), token=OLD_TOKEN)
    assert (query.status_code, slash.status_code, retired.status_code) == (200, 200, 200)
    assert len(receiver.rows()) == 3


@pytest.mark.parametrize("token", ["wrong-token-0123456789abcdef", TOKEN[:-1], TOKEN + "x"])
def test_a_forged_delivery_is_401_and_nothing_is_stored(receiver: Receiver, token: str) -> None:
    """A wrong token answers 401 and stores nothing; no token in the query is also 401."""
    assert receiver.post(SCHEDULED, token=token).status_code == 401
    no_token = httpx.post(f"{receiver.url}{WEBHOOK_PATH}", content=SCHEDULED, timeout=10)
    assert no_token.status_code == 401
    assert receiver.rows() == []
    assert receiver.outcome_count("unauthorized") == 2
    assert receiver.outcome_count("stored") == 0


def test_only_post_is_served_on_the_webhook_path(receiver: Receiver) -> None:
    """A GET on the webhook path is 405; other paths 404; nothing stored."""
    assert httpx.get(f"{receiver.url}{WEBHOOK_PATH}/{TOKEN}", timeout=10).status_code == 405
    assert httpx.post(f"{receiver.url}/elsewhere", content=b"{}", timeout=10).status_code == 404
    assert receiver.rows() == []


def _raw_request(url: str, head: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.sendall(head.encode())
    return sock


def _read_status(sock: socket.socket) -> int:
    answer = sock.recv(4096).decode(errors="replace")
    return int(answer.split(" ", 2)[1])


def test_a_5_mb_body_is_refused_before_it_is_read(receiver: Receiver) -> None:
    """Content-Length 5 MB: 413 after 64 KB were sent; the server did not wait for the rest."""
    five_mb = 5 * 1024 * 1024
    sock = _raw_request(
        receiver.url,
        f"POST {WEBHOOK_PATH}/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {five_mb}\r\n\r\n",
    )
    try:
        sock.sendall(b"{" + b" " * (64 * 1024))
        readable, _, _ = select.select([sock], [], [], 5)
        assert readable, "no answer while most of the body was never sent"
        assert _read_status(sock) == 413
    finally:
        sock.close()
    assert receiver.rows() == []
    assert receiver.outcome_count("too_large") == 1


def test_a_chunked_body_over_1_mb_is_cut_off(receiver: Receiver) -> None:
    """Without a length the body is read only up to 1 MB: 413 long before 5 MB are sent."""
    sock = _raw_request(
        receiver.url,
        f"POST {WEBHOOK_PATH}/{TOKEN} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    chunk = b"a" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    status = None
    try:
        while sent < 5 * 1024 * 1024:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                status = _read_status(sock)
                break
            assert writable, "the server neither read nor answered"
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        if status is None:
            readable, _, _ = select.select([sock], [], [], 5)
            status = _read_status(sock) if readable else None
    finally:
        sock.close()
    assert status == 413
    assert sent < 4 * 1024 * 1024
    assert receiver.rows() == []


def test_a_body_that_is_not_json_is_acknowledged_and_kept_for_a_person(
    receiver: Receiver,
) -> None:
    """200 (a refusal would stall the vendor's queue), stored as malformed with the reason."""
    response = receiver.post(b'{"order_id": 100001, "order_status": "sched')
    assert response.status_code == 200
    assert response.json()["status"] == "malformed"
    (row,) = receiver.rows()
    assert row.state is DeliveryState.MALFORMED
    assert row.problem is not None
    assert "not JSON" in row.problem
    assert receiver.outcome_count("malformed") == 1


def test_the_same_delivery_ten_times_is_one_row(receiver: Receiver) -> None:
    """Ten sequential copies and ten concurrent copies: one row each, every copy answered 200."""
    answers = [receiver.post(SCHEDULED).json()["status"] for _ in range(10)]
    assert answers == ["stored"] + ["duplicate"] * 9

    other = delivery(100001, "on_site", "2026-12-01T11:00:00.000+00:00")
    results: list[int] = []

    def send() -> None:
        results.append(receiver.post(other).status_code)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 10
    assert len(receiver.rows()) == 2
    assert receiver.outcome_count("stored") == 2
    assert receiver.outcome_count("duplicate") == 18


def test_deliveries_out_of_order_are_kept_in_receipt_order_and_apply_in_time_order(
    receiver: Receiver,
) -> None:
    """Newest first on the wire: stored as received; claiming and ranking restore the order."""
    sent = [
        ("completed", "2026-12-03T10:00:00Z"),
        ("scheduled", "2026-12-01T10:00:00Z"),
        ("post_processing", "2026-12-02T10:00:00Z"),
    ]
    for status, when in sent:
        assert receiver.post(delivery(100001, status, when)).status_code == 200
    assert [row.order_status for row in receiver.rows()] == [s for s, _ in sent]
    with receiver.engine.begin() as connection:
        claimed = deliveries.claim_pending(connection, 10)
    assert [d.order_status for d in claimed] == ["scheduled", "post_processing", "completed"]
    current = None
    for row in receiver.rows():  # applied in receipt order, the status still ends right
        if is_newer(current, row.status_point):
            current = row.status_point
    assert current == StatusPoint("completed", claimed[-1].event_at)


def test_a_delivery_for_an_order_we_never_placed_is_kept(receiver: Receiver) -> None:
    """Stored with its ids, pending: the applier flags it unmatched, it is not refused."""
    response = receiver.post(delivery(987654, "scheduled", external_order_id="someone-else"))
    assert response.status_code == 200
    (row,) = receiver.rows()
    assert (row.vendor_order_id, row.external_order_id, row.state) == (
        "987654",
        "someone-else",
        DeliveryState.PENDING,
    )


def test_health_and_metrics(receiver: Receiver) -> None:
    """/healthz is 200 while the database answers; /metrics counts deliveries by outcome."""
    receiver.post(SCHEDULED)
    receiver.post(SCHEDULED, token="nope-0123456789abcdefghijkl")
    health = httpx.get(f"{receiver.url}/healthz", timeout=10)
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    text = httpx.get(f"{receiver.url}/metrics", timeout=10).text
    assert 'propready_webhook_deliveries_total{outcome="stored"} 1.0' in text
    assert 'propready_webhook_deliveries_total{outcome="unauthorized"} 1.0' in text
    assert 'propready_webhook_deliveries_total{outcome="store_failed"} 0.0' in text
    assert "propready_webhook_ack_seconds_bucket" in text


def test_the_access_log_never_shows_the_token(receiver: Receiver) -> None:
    """One structured line per request; the token is cut from the path and the query dropped."""
    with structlog.testing.capture_logs() as logs:
        receiver.post(SCHEDULED)
        httpx.post(
            f"{receiver.url}{WEBHOOK_PATH}", params={"token": TOKEN}, content=b"x", timeout=10
        )
        receiver.post(SCHEDULED, token=OLD_TOKEN + "zz")
        receiver.post(SCHEDULED, token=OLD_TOKEN)
        time.sleep(0.2)  # the line is written after the answer
    lines = [entry for entry in logs if entry["event"] == "http_request"]
    assert [(line["status"], line.get("outcome")) for line in lines] == [
        (200, "stored"),
        (200, "malformed"),
        (401, "unauthorized"),
        (200, "duplicate"),
    ]
    assert lines[0]["path"] == f"{WEBHOOK_PATH}/***"
    assert [line.get("token_slot") for line in lines] == ["current", "current", None, "previous"]
    assert TOKEN not in repr(logs)
    assert OLD_TOKEN not in repr(logs)


@pytest.mark.postgres
@pytest.mark.slow
def test_the_state_database_down_answers_503_and_the_retry_is_stored_once() -> None:
    """PostgreSQL stopped mid-flight: 503 (the vendor retries), /healthz 503, nothing written;
    once it is back the retry is stored, once; after a restart the next delivery is stored."""
    server = PrivatePostgres()
    server.start()
    try:
        admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text("CREATE DATABASE propready_state"))
        admin.dispose()
        state_url = server.url.rsplit("/", 1)[0] + "/propready_state"
        engine = create_state_engine(state_url)
        migrate.upgrade(engine)
        engine.dispose()
        with running_receiver(state_url) as receiver:
            assert receiver.post(delivery(100001, "ordered")).status_code == 200
            server.stop()
            down = receiver.post(SCHEDULED)
            assert down.status_code == 503
            assert down.json()["status"] == "store_failed"
            assert httpx.get(f"{receiver.url}/healthz", timeout=30).status_code == 503
            assert receiver.outcome_count("store_failed") == 1
            server.start()
            retry = receiver.post(SCHEDULED)
            assert retry.status_code == 200
            assert retry.json()["status"] == "stored"
            assert receiver.post(SCHEDULED).json()["status"] == "duplicate"
            # A restart between two deliveries leaves dead connections in the pool: the next
            # delivery finds out, and is stored on a fresh connection, not refused.
            server.restart()
            after_restart = receiver.post(delivery(100001, "on_site"))
            assert (after_restart.status_code, after_restart.json()["status"]) == (200, "stored")
            rows = receiver.rows()
        assert [row.order_status for row in rows] == ["ordered", "scheduled", "on_site"]
    finally:
        server.destroy()
