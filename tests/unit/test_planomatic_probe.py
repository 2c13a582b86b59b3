"""The vendor probe behind `check`: what answered, read as a verdict on the URL and the key."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from propready.adapters.planomatic_probe import probe_vendor

URL = "https://api-sandbox.planomatic.com"


def answering(
    status: int, body: Any, content_type: str = "application/json"
) -> httpx.MockTransport:
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v3/orders/retrieve"
        assert json.loads(request.content)["order_id"] == 0  # an id no order can have
        return httpx.Response(status, content=raw, headers={"content-type": content_type})

    return httpx.MockTransport(handler)


def verdict(transport: httpx.BaseTransport) -> tuple[bool, str]:
    result = probe_vendor(URL, "k", transport=transport)
    return result.ok, result.detail


VENDOR_400 = {"code": 400, "status": "validation-error", "errors": [{"attr": "order_id", "message": "unrecognized"}]}  # fmt: skip


def test_the_vendors_unknown_order_answer_passes() -> None:
    """400 validation-error naming order_id: the URL is the API and the key is accepted."""
    assert verdict(answering(400, VENDOR_400)) == (
        True,
        f"{URL} answers like the API; the key is accepted",
    )


def test_a_json_404_in_the_vendors_shape_passes() -> None:
    """Some versions answer an unknown order with 404 in the error shape: still the API."""
    ok, detail = verdict(answering(404, {**VENDOR_400, "code": 404}))
    assert ok
    assert "(404)" in detail


@pytest.mark.parametrize("message", ["unauthorized", "missing"])
def test_a_refused_key_fails_with_the_vendors_words(message: str) -> None:
    """api_key unauthorized (or missing) FAILs quoting the vendor's attr and message."""
    body = {"code": 400, "status": "validation-error", "errors": [{"attr": "api_key", "message": message}]}  # fmt: skip
    ok, detail = verdict(answering(400, body))
    assert not ok
    assert f"refuses the API key (api_key: {message})" in detail


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (404, b"<html>Not Found</html>", "text/html", "(HTTP 404, text/html for POST"),
        (404, {"code": 404, "status": "not-found"}, "application/json", "(HTTP 404, JSON of another shape"),
        (200, b"<html>Welcome</html>", "text/html", "(HTTP 200, text/html for POST"),
        (200, {"hello": "world"}, "application/json", "(HTTP 200, JSON of another shape"),
        (301, b"", "text/html", "(HTTP 301, text/html"),
        (400, b"Bad Request", "text/plain", "(HTTP 400, text/plain"),
        (502, b"<html>Bad gateway</html>", "text/html", "answers HTTP 502: try later"),
    ],
)  # fmt: skip
def test_answers_that_are_not_the_api_fail_naming_the_url(
    status: int, body: Any, content_type: str, expected: str
) -> None:
    """HTML, a foreign 404, a JSON of another shape, a redirect or a gateway page: FAIL."""
    ok, detail = verdict(answering(status, body, content_type))
    assert not ok
    assert detail.startswith(f"planomatic.base_url: {URL}")
    assert expected in detail


def test_a_refused_connection_names_host_port_and_reason() -> None:
    """No listener: FAIL with the setting, host:port and `connection refused`."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    ok, detail = verdict(httpx.MockTransport(refuse))
    assert (ok, detail) == (
        False,
        "planomatic.base_url: cannot connect to api-sandbox.planomatic.com:443 (connection refused)",
    )


def test_a_rate_limited_key_passes_but_says_it_was_not_tested() -> None:
    """A 429 proves the API is there; the verdict says the key could not be tested."""
    ok, detail = verdict(answering(429, {"code": 429, "status": "rate-limit-exceeded"}))
    assert ok
    assert "key is untested" in detail


def test_the_key_never_appears_in_a_verdict() -> None:
    """Whatever answered, the verdict text does not contain the API key."""
    for transport in (answering(400, VENDOR_400), answering(404, b"<html>", "text/html")):
        assert (
            "secret-key-123" not in probe_vendor(URL, "secret-key-123", transport=transport).detail
        )
