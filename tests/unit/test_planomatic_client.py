"""The PlanOmatic client maps every kind of answer to one typed outcome (httpx mock transport)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from propready.adapters.planomatic import (
    PlanomaticClient,
    VendorAmbiguous,
    VendorError,
    VendorRateLimited,
    VendorRejected,
    VendorUnreachable,
)

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler) -> PlanomaticClient:
    return PlanomaticClient(
        "https://api.example.test", "key-123456", transport=httpx.MockTransport(handler)
    )


def test_create_posts_json_with_the_key_in_the_body() -> None:
    """POST /api/v3/orders/create with api_key in the JSON body and nothing in the URL."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            201,
            json={
                "code": 201,
                "status": "action-successful",
                "data": {
                    "order_id": 7,
                    "request_id": 9,
                    "order_status": "brand_new_status",
                    "surprise": 1,
                },
            },
        )

    with _client(handler) as client:
        order = client.create_order({"external_property_id": "P1"})
    (request,) = seen
    assert request.url.path == "/api/v3/orders/create"
    assert "key" not in str(request.url)
    assert json.loads(request.content) == {"external_property_id": "P1", "api_key": "key-123456"}
    assert (order.order_id, order.request_id, order.order_status) == ("7", "9", "brand_new_status")
    assert order.raw["surprise"] == 1


def test_validation_error_names_each_field() -> None:
    """A 400 validation-error becomes VendorRejected with every attr and message."""
    body = {
        "code": 400,
        "status": "validation-error",
        "errors": [
            {"attr": "property.location.state", "message": "unrecognized"},
            {"attr": "services", "message": "empty"},
        ],
    }
    with (
        _client(lambda r: httpx.Response(400, json=body)) as client,
        pytest.raises(VendorRejected) as caught,
    ):
        client.create_order({})
    assert [str(e) for e in caught.value.field_errors] == [
        "property.location.state: unrecognized",
        "services: empty",
    ]


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (
            httpx.Response(429, json={"code": 429, "status": "rate-limit-exceeded"}),
            VendorRateLimited,
        ),
        (httpx.Response(429, text="slow down"), VendorRateLimited),
        (httpx.Response(500, json={"code": 500, "status": "application-crash"}), VendorAmbiguous),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), VendorAmbiguous),
        (httpx.Response(400, text="<html>Bad Request</html>"), VendorAmbiguous),
        (httpx.Response(200, text="not json"), VendorAmbiguous),
        (httpx.Response(201, text='{"code":201,"data":{"order_'), VendorAmbiguous),
        (httpx.Response(302, headers={"location": "https://elsewhere"}), VendorAmbiguous),
    ],
)
def test_answers_map_to_their_outcome(response: httpx.Response, kind: type[VendorError]) -> None:
    """Each status and body shape lands in the right branch of the hierarchy."""
    with _client(lambda r: response) as client, pytest.raises(kind):
        client.create_order({})


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectError("refused"), VendorUnreachable),
        (httpx.ConnectTimeout("slow connect"), VendorUnreachable),
        (httpx.ReadTimeout("stalled"), VendorAmbiguous),
        (httpx.RemoteProtocolError("dropped"), VendorAmbiguous),
        (httpx.WriteError("broken pipe"), VendorAmbiguous),
    ],
)
def test_transport_failures_split_into_not_reached_and_ambiguous(
    error: Exception, kind: type[VendorError]
) -> None:
    """Only failures before the request left are safe to retry; the rest are ambiguous."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with _client(handler) as client, pytest.raises(kind) as caught:
        client.create_order({"property_access": {"access_code": "7391"}})
    assert "key-123456" not in str(caught.value)
    assert "7391" not in str(caught.value)
