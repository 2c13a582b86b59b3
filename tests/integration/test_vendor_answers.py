"""Hostile vendor answers are bounded: a total deadline, a size cap, a depth cap, checked ids.

The slow and endless answers come from raw socket servers on loopback (the real network path);
the shapes from httpx's mock transport; the outcomes of a whole send from real cycles.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from propready.adapters.planomatic import PlanomaticClient, VendorAmbiguous, VendorRejected
from propready.adapters.store import audit, outbox
from propready.adapters.vendor_answers import MAX_ANSWER_BYTES
from propready.core.audit_kinds import AuditKind
from propready.service import run_cycle
from tests.integration.cycle_support import Clock, PmDatabase, home, make_settings, wired

Script = Callable[[socket.socket, threading.Event], None]


def _read_request(conn: socket.socket) -> None:
    """Read one HTTP request (headers and a Content-Length body) so the client is not blocked."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


@contextmanager
def raw_server(script: Script) -> Iterator[str]:
    """A one-connection HTTP server on loopback that answers with `script(conn, stop)`."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            _read_request(conn)
            with contextlib.suppress(OSError):  # the client hung up: what the deadline does
                script(conn, stop)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def _trickle(conn: socket.socket, stop: threading.Event, data: bytes) -> None:
    for byte in data:
        if stop.wait(1.0):  # one byte a second, for at most len(data) seconds
            return
        conn.sendall(bytes([byte]))


def body_trickle(conn: socket.socket, stop: threading.Event) -> None:
    """Headers at once, then the body one byte a second (each read well inside any timeout)."""
    conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n")
    conn.sendall(b"Content-Length: 40\r\n\r\n")
    _trickle(conn, stop, b'{"code":201,"data":{"order_id":1234567}}')


def header_trickle(conn: socket.socket, stop: threading.Event) -> None:
    """The status line and headers themselves one byte a second."""
    _trickle(conn, stop, b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n")


@pytest.mark.parametrize("script", [body_trickle, header_trickle])
def test_a_trickling_vendor_is_cut_at_timeout_seconds(script: Script) -> None:
    """A server sending one byte a second is cut at timeout_seconds (1.5 s), as ambiguous."""
    outcomes: list[tuple[str, str]] = []
    with raw_server(script) as url:
        client = PlanomaticClient(
            url,
            "key-123456",
            timeout_seconds=1.5,
            observer=lambda op, out: outcomes.append((op, out)),
        )
        started = time.monotonic()
        with client, pytest.raises(VendorAmbiguous, match=r"within 1\.5 s") as caught:
            client.create_order({"external_property_id": "P1"})
        elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 2.0, elapsed
    assert "key-123456" not in str(caught.value)
    assert outcomes == [("create", "timeout")]


def endless_chunks(conn: socket.socket, stop: threading.Event) -> None:
    """A 200 whose chunked body never ends (no Content-Length to refuse it by)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    conn.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"[" * 65536
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    for _ in range(1000):  # 64 MB at most, so a broken cap ends the test instead of hanging it
        if stop.is_set():
            return
        conn.sendall(frame)


def test_an_endless_answer_is_cut_at_the_size_cap() -> None:
    """A streamed answer is read up to 1 MB and then abandoned as ambiguous."""
    with (
        raw_server(endless_chunks) as url,
        PlanomaticClient(url, "key-123456", timeout_seconds=10) as client,
        pytest.raises(VendorAmbiguous, match="larger than 1,000,000 bytes"),
    ):
        client.retrieve_order("7")


def _mock(status: int, content: bytes, **headers: str) -> PlanomaticClient:
    def vendor(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    return PlanomaticClient(
        "https://vendor.test", "key-123456", transport=httpx.MockTransport(vendor)
    )


def test_an_announced_huge_answer_is_not_read() -> None:
    """A body over the cap (5 MB) is refused as ambiguous, whatever it holds."""
    body = b'{"code":201,"data":{"order_id":1,"pad":"' + b"x" * 5_000_000 + b'"}}'
    assert len(body) > MAX_ANSWER_BYTES
    with _mock(201, body) as client, pytest.raises(VendorAmbiguous, match="bytes"):
        client.create_order({})


@pytest.mark.parametrize("status", [201, 400, 500])
def test_deeply_nested_json_is_refused_without_a_recursion_error(status: int) -> None:
    """100,000 nested arrays make no RecursionError; the answer is ambiguous (never final)."""
    depth = 100_000
    with _mock(status, b"[" * depth + b"]" * depth) as client, pytest.raises(VendorAmbiguous):
        client.create_order({})


def test_json_deeper_than_the_cap_but_parseable_is_refused() -> None:
    """An answer nested 40 deep (within Python's parser, over our cap of 32) is unreadable."""
    nested = b'{"a":' * 40 + b"1" + b"}" * 40
    body = b'{"code":201,"data":{"order_id":5,"x":' + nested + b"}}"
    with _mock(201, body) as client, pytest.raises(VendorAmbiguous, match="nested"):
        client.create_order({})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"order_id": "9" * 200, "order_status": "ordered"}, "order_id: text of 200 characters"),
        ({"order_id": 10**200}, "order_id: a number of 201 digits"),
        ({"order_id": {"id": 5}}, "order_id: a dict"),
        ({"order_id": True}, "order_id: a bool"),
        ({"order_status": "ordered", "request_id": 77}, "no order_id"),
        ({}, "no order_id"),
    ],
)
def test_a_create_answer_without_a_usable_order_id_is_ambiguous(
    data: dict[str, Any], reason: str
) -> None:
    """Over-long, non-scalar or missing order ids on a 2xx create: VendorAmbiguous with why."""
    body = httpx.Response(201, json={"code": 201, "data": data}).content
    with _mock(201, body) as client, pytest.raises(VendorAmbiguous) as caught:
        client.create_order({})
    assert reason in str(caught.value)
    assert "may exist" in str(caught.value)


def test_an_unusable_status_next_to_a_good_id_is_dropped_and_named() -> None:
    """The order id is kept; an over-long status and a bad request id are listed as anomalies."""
    data = {"order_id": 42, "request_id": "x" * 65, "order_status": "s" * 300}
    body = httpx.Response(201, json={"code": 201, "data": data}).content
    with _mock(201, body) as client:
        order = client.create_order({})
    assert (order.order_id, order.request_id, order.order_status) == ("42", None, None)
    assert order.anomalies == (
        "unusable request_id: text of 65 characters",
        "unusable order_status: text of 300 characters",
    )


def test_a_retrieve_answer_with_an_unusable_status_is_not_recorded() -> None:
    """Retrieve refuses an answer whose status cannot be stored, instead of erasing the known one."""
    body = httpx.Response(200, json={"code": 200, "data": {"order_id": 4, "order_status": ["x"]}})
    with _mock(200, body.content) as client, pytest.raises(VendorAmbiguous, match="order_status"):
        client.retrieve_order("4")


@pytest.mark.parametrize(
    "content",
    [
        b'{"message": "Bad Request"}',
        b'{"error": "request blocked by policy"}',
        b'{"code": 400, "status": "validation-error", "errors": "oops"}',
        b'{"code": 400, "status": "validation-error", "errors": [{"attr": 1, "message": "x"}]}',
        b'{"status": "validation-error", "errors": []}',
        b"[]",
    ],
)
def test_a_400_without_the_vendors_error_shape_is_ambiguous(content: bytes) -> None:
    """A 400 from a proxy or firewall (JSON, not the documented shape) is not a final rejection."""
    with _mock(400, content) as client, pytest.raises(VendorAmbiguous, match="error format"):
        client.create_order({})


def test_a_400_in_the_vendors_shape_stays_a_rejection() -> None:
    """The documented shape is still final, its field errors kept (and bounded in length)."""
    errors = [{"attr": "property.location.state", "message": "unrecognized" + "!" * 400}]
    body = httpx.Response(
        400, json={"code": 400, "status": "validation-error", "errors": errors}
    ).content
    with _mock(400, body) as client, pytest.raises(VendorRejected) as caught:
        client.create_order({})
    (error,) = caught.value.field_errors
    assert (error.attr, len(error.message)) == ("property.location.state", 255)


# --- the outcome of a whole send ------------------------------------------------------------


def _send_once(state_url: str, tmp_path: Path, answer: httpx.Response) -> dict[str, Any]:
    """One home becomes ready and is sent to a vendor giving `answer`; the order afterwards."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"))
    settings = make_settings(state_url, pm.url, "https://vendor.test")
    clock = Clock()
    try:
        with wired(settings, transport=httpx.MockTransport(lambda r: answer)) as parts:
            run_cycle(parts, clock)
            pm.set("H1", status="Vacant Unrented Ready")
            run_cycle(parts, clock)
            with parts.state.connect() as connection:
                (order,) = outbox.list_orders(connection)
                events = audit.query_events(connection, external_property_id="H1")
    finally:
        pm.close()
    return {"order": order, "events": events}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"order_id": "7" * 200, "order_status": "ordered"}, "text of 200 characters"),
        ({}, "no order_id"),
    ],
)
def test_an_unusable_create_answer_leaves_the_order_unknown_not_stuck(
    state_url: str, tmp_path: Path, data: dict[str, Any], reason: str
) -> None:
    """A 201 with a 200-character order id, or none, ends `unknown` with the reason audited."""
    answer = httpx.Response(201, json={"code": 201, "status": "action-successful", "data": data})
    result = _send_once(state_url, tmp_path, answer)
    order = result["order"]
    assert (order.state, order.vendor_order_id) == ("unknown", None)
    (unknown,) = [e for e in result["events"] if e["kind"] == AuditKind.ORDER_OUTCOME_UNKNOWN]
    assert reason in unknown["detail"]["reason"]
    assert "may exist" in unknown["detail"]["reason"]


def test_an_over_long_status_is_placed_with_the_anomaly_audited(
    state_url: str, tmp_path: Path
) -> None:
    """A good order id with a 300-character status: placed, status empty, anomaly in the audit."""
    data = {"order_id": 981, "order_status": "s" * 300}
    answer = httpx.Response(201, json={"code": 201, "status": "action-successful", "data": data})
    result = _send_once(state_url, tmp_path, answer)
    order = result["order"]
    assert (order.state, order.vendor_order_id, order.vendor_status) == (
        "placed",
        "981",
        None,
    )
    (placed,) = [e for e in result["events"] if e["kind"] == AuditKind.ORDER_PLACED]
    assert placed["detail"]["anomalies"] == ["unusable order_status: text of 300 characters"]
