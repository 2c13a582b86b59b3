"""Is `[planomatic] base_url` the Order API, and does it accept the key? (`propready check`)

The probe is a retrieve of an order id that cannot exist (0), sent through the real client so
the request is exactly what the daemon sends. PlanOmatic's own error shape answers it: a 400
`validation-error` naming `order_id` (or a JSON 404 in that shape) means the URL and the key are
right; `api_key unauthorized` (or `missing`) means the key is wrong. HTML, a 404 that is not the
API's, a JSON body of another shape or a connection error mean the URL is wrong.

The client hides the raw answer behind its exception types, so a transport that remembers the
last response and transport error stands between it and the network: the verdict can then quote
what actually answered (a status, a content type, the socket's reason).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from propready.adapters.planomatic import (
    PlanomaticClient,
    VendorAmbiguous,
    VendorError,
    VendorKeyRefused,
    VendorRateLimited,
    VendorRejected,
    VendorUnreachable,
)

IMPOSSIBLE_ORDER_ID = "0"  # PlanOmatic's ids are positive


@dataclass(frozen=True, slots=True)
class ProbeVerdict:
    ok: bool
    detail: str


class _RememberingTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.response: httpx.Response | None = None
        self.error: Exception | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            answer = self.inner.handle_request(request)
            content = answer.read()  # decoded; the client reads the copy below
        except httpx.TransportError as exc:
            self.error = exc
            raise
        headers = [
            (name, value)
            for name, value in answer.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        self.response = httpx.Response(
            answer.status_code, headers=headers, content=content, request=request
        )
        return httpx.Response(
            answer.status_code,
            headers=headers,
            content=content,
            request=request,
            extensions=answer.extensions,
        )

    def close(self) -> None:
        self.inner.close()


def probe_vendor(
    base_url: str,
    api_key: str,
    *,
    timeout_seconds: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> ProbeVerdict:
    """What the vendor at `base_url` says to a retrieve of an impossible order, as a verdict."""
    remembering = _RememberingTransport(transport or httpx.HTTPTransport(verify=True))
    client = PlanomaticClient(
        base_url, api_key, timeout_seconds=timeout_seconds, transport=remembering
    )
    try:
        order = client.retrieve_order(IMPOSSIBLE_ORDER_ID)
    except VendorRejected as exc:
        return _rejected(base_url, exc)
    except VendorKeyRefused as exc:
        return ProbeVerdict(
            False,
            f"PlanOmatic at {base_url} refuses the API key ({exc.vendor_words}); "
            "set planomatic.api_key (a credential or PROPREADY_PLANOMATIC__API_KEY)",
        )
    except VendorRateLimited:
        return ProbeVerdict(
            True, f"{base_url} answers like the API (429 rate-limited now: the key is untested)"
        )
    except VendorUnreachable:
        return ProbeVerdict(
            False, f"planomatic.base_url: cannot connect to {_where(base_url)} "
            f"({_socket_reason(remembering.error)})",
        )  # fmt: skip
    except VendorAmbiguous:
        return _not_the_api(base_url, remembering)
    except VendorError as exc:  # a new kind of vendor failure: say what it was
        return ProbeVerdict(False, f"planomatic.base_url: {base_url}: {exc}")
    finally:
        client.close()
    if order.order_id is None and order.order_status is None:
        return _not_the_api(base_url, remembering)
    return ProbeVerdict(True, f"{base_url} answers like the API; the key is accepted")


def _rejected(base_url: str, exc: VendorRejected) -> ProbeVerdict:
    errors = [(e.attr, e.message) for e in exc.field_errors]
    refused = [message for attr, message in errors if attr == "api_key"]
    if refused:
        return ProbeVerdict(
            False,
            f"PlanOmatic at {base_url} refuses the API key (api_key: {refused[0]}); "
            "set planomatic.api_key (a credential or PROPREADY_PLANOMATIC__API_KEY)",
        )
    if any(attr in ("order_id", "request_id") for attr, _ in errors):
        return ProbeVerdict(True, f"{base_url} answers like the API; the key is accepted")
    return ProbeVerdict(
        False, f"planomatic.base_url: {base_url} answers a 400 that is not the API's ({exc})"
    )


def _not_the_api(base_url: str, remembering: _RememberingTransport) -> ProbeVerdict:
    response = remembering.response
    if response is None:
        reason = _socket_reason(remembering.error)
        return ProbeVerdict(
            False, f"planomatic.base_url: no answer from {_where(base_url)} ({reason})"
        )
    body = _json(response)
    if response.status_code == 404 and body is not None and _names_the_order(body):
        return ProbeVerdict(True, f"{base_url} answers like the API (404); the key is accepted")
    if response.status_code >= 500:
        what = f"HTTP {response.status_code}"
        return ProbeVerdict(False, f"planomatic.base_url: {base_url} answers {what}: try later")
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    shape = "JSON of another shape" if body is not None else kind
    return ProbeVerdict(
        False,
        f"planomatic.base_url: {base_url} does not answer like the PlanOmatic API "
        f"(HTTP {response.status_code}, {shape} for POST {response.request.url.path})",
    )


def _names_the_order(body: dict[str, Any]) -> bool:
    errors = body.get("errors")
    return isinstance(errors, list) and any(
        isinstance(e, dict) and e.get("attr") in ("order_id", "request_id") for e in errors
    )


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _where(base_url: str) -> str:
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _socket_reason(error: Exception | None) -> str:
    """'connection refused', 'host name not found', 'timed out', or the driver's own words."""
    if error is None:
        return "no answer"
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    text = str(error) or type(error).__name__
    lowered = text.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "host name not found"
    if "certificate" in lowered or "ssl" in lowered:
        return "TLS: " + re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0])[:120]
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text.splitlines()[0])[:120]
