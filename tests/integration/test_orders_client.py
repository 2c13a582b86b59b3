"""The PlanOmatic client's retrieve and cancel per the contract, and its tolerant parsing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from propready.adapters.planomatic import PlanomaticClient, VendorRejected
from propready.adapters.sandbox import SandboxServer
from propready.core.orders import CancelRefused
from tests.integration.test_sandbox_faults import KEY, _config, _order


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(_config()) as server:
        yield server


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[PlanomaticClient]:
    with PlanomaticClient(sandbox.url, KEY, timeout_seconds=2) as planomatic:
        yield planomatic


def _mock(status: int, body: Any) -> PlanomaticClient:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return PlanomaticClient(
        "http://vendor.test",
        KEY,
        transport=httpx.MockTransport(lambda request: httpx.Response(status, content=content)),
    )


def test_retrieve_by_order_id_and_by_request_id(
    sandbox: SandboxServer, client: PlanomaticClient
) -> None:
    """Both ids find the order; the answer carries the vendor's status and echoes our ids."""
    placed = client.create_order(_order())
    assert placed.order_id is not None
    assert placed.request_id is not None
    by_order = client.retrieve_order(placed.order_id)
    by_request = client.retrieve_order(request_id=placed.request_id)
    assert by_order.order_status == by_request.order_status == "new_request"
    assert by_order.raw["external_order_id"] == "po-77"


def test_cancel_a_new_order(sandbox: SandboxServer, client: PlanomaticClient) -> None:
    """A cancel with a valid reason and notes leaves the vendor's order canceled."""
    placed = client.create_order(_order())
    canceled = client.cancel_order(placed.order_id, "duplicate_order", "ordered twice")
    assert canceled.order_status == "canceled"
    assert sandbox.orders[0]["order_status"] == "canceled"


@pytest.mark.parametrize(
    ("reason", "notes", "why"),
    [
        ("changed_mind", "x", "reason must be one of"),
        ("duplicate_order", "  ", "notes are required"),
        ("duplicate_order", "n" * 256, "at most 255"),
    ],
)
def test_cancel_fields_outside_the_contract_are_refused_before_sending(
    sandbox: SandboxServer, client: PlanomaticClient, reason: str, notes: str, why: str
) -> None:
    """An unknown reason or notes outside 1-255 characters never reach the vendor."""
    placed = client.create_order(_order())
    seen = sandbox.requests_seen()
    with pytest.raises(CancelRefused, match=why):
        client.cancel_order(placed.order_id, reason, notes)
    assert sandbox.requests_seen() == seen


def test_a_255_character_note_is_accepted(client: PlanomaticClient) -> None:
    """The upper bound itself is within the contract."""
    placed = client.create_order(_order())
    assert client.cancel_order(placed.order_id, "duplicate_order", "n" * 255).order_status == (
        "canceled"
    )


def test_the_vendor_refuses_to_cancel_a_scheduled_order(
    sandbox: SandboxServer, client: PlanomaticClient
) -> None:
    """Past `scheduling` the vendor answers order_id/not_cancelable, a final rejection."""
    placed = client.create_order(_order())
    assert placed.order_id is not None
    sandbox.advance_status(int(placed.order_id), "scheduled")
    with pytest.raises(VendorRejected) as refused:
        client.cancel_order(placed.order_id, "client_requested_cancelation", "home sold")
    assert [(e.attr, e.message) for e in refused.value.field_errors] == [
        ("order_id", "not_cancelable")
    ]


def test_unknown_statuses_and_extra_fields_are_kept() -> None:
    """A status and fields the contract does not list are accepted and passed through."""
    body = {
        "code": 200,
        "status": "action-successful",
        "data": {
            "order_id": "9",
            "request_id": 12,
            "order_status": "awaiting_drone_permit",
            "photographer": {"name": "Sam"},
        },
        "trace_id": "abc",
    }
    with _mock(200, body) as client:
        order = client.retrieve_order("9")
    assert (order.order_id, order.request_id, order.order_status) == (
        "9",
        "12",
        "awaiting_drone_permit",
    )
    assert order.raw["photographer"] == {"name": "Sam"}


def test_a_failure_code_inside_a_200_is_a_rejection() -> None:
    """The body's `code` mirrors the result: a 200 carrying code 400 is read as the 400 it is."""
    body = {"code": 400, "status": "validation-error", "errors": None}
    with _mock(200, body) as client, pytest.raises(VendorRejected) as rejected:
        client.retrieve_order("9")
    assert rejected.value.field_errors == []


@pytest.mark.parametrize(
    "body",
    [
        {
            "code": 400,
            "status": "validation-error",
            "errors": [{"attr": "external_property_id", "message": "duplicate"}],
        },
        {"code": 400, "status": "duplicate-order"},
    ],
)
def test_the_vendors_duplicate_refusal_is_recognised(body: dict[str, Any]) -> None:
    """Both plausible shapes of the duplicate answer (keyword or status string) are recognised."""
    with _mock(400, body) as client, pytest.raises(VendorRejected) as rejected:
        client.create_order(_order())
    assert rejected.value.is_duplicate


def test_the_api_key_travels_in_the_body_only() -> None:
    """api_key is in the JSON body, never in the URL or a header."""
    seen: list[httpx.Request] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": 200, "data": {"order_id": 1}})

    with PlanomaticClient("http://vendor.test", KEY, transport=httpx.MockTransport(vendor)) as c:
        c.retrieve_order("1")
    (request,) = seen
    assert KEY not in str(request.url)
    assert all(KEY not in value for value in request.headers.values())
    assert json.loads(request.content)["api_key"] == KEY
