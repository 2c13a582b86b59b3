"""PlanOmatic V3 Order API client (httpx, synchronous).

Exception hierarchy (callers branch on these, never on httpx's):

    VendorError
    ├── VendorNotReached      the request provably did not reach PlanOmatic: safe to send again
    │   ├── VendorRateLimited   HTTP 429
    │   ├── VendorUnreachable   connection refused, DNS failure, connect timeout
    │   └── VendorKeyRefused    HTTP 401/403, or a 400 naming `api_key`: a configuration
    │                           failure (nothing was created), not an order outcome
    ├── VendorRejected        HTTP 400 validation-error: final; `field_errors` names each field
    └── VendorAmbiguous       5xx, read timeout, connection dropped after the request was written,
                              an unreadable answer: the order may or may not exist now

The api_key travels in the JSON body (the vendor's design), never in a URL; no message here ever
contains it or the request body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from propready.core.orders import check_cancel_request, is_duplicate_answer

CREATE_PATH = "/api/v3/orders/create"
RETRIEVE_PATH = "/api/v3/orders/retrieve"
CANCEL_PATH = "/api/v3/orders/cancel"


class VendorError(Exception):
    """A PlanOmatic call did not succeed."""


class VendorNotReached(VendorError):
    """Nothing was saved by the vendor; sending again cannot create a duplicate."""


class VendorRateLimited(VendorNotReached):
    """HTTP 429 rate-limit-exceeded."""


class VendorUnreachable(VendorNotReached):
    """The connection was never established."""


class VendorKeyRefused(VendorNotReached):
    """PlanOmatic refused the API key: nothing was created, and nothing will be until the key is
    fixed. `vendor_words` is what the vendor said (never the key)."""

    def __init__(self, vendor_words: str) -> None:
        super().__init__(f"PlanOmatic refused the API key: {vendor_words}")
        self.vendor_words = vendor_words


class VendorAmbiguous(VendorError):
    """The vendor may have saved the request; never re-send it blindly."""


@dataclass(frozen=True, slots=True)
class FieldError:
    attr: str
    message: str

    def __str__(self) -> str:
        return f"{self.attr}: {self.message}"


class VendorRejected(VendorError):
    """HTTP 400: the request is invalid and will stay invalid."""

    def __init__(self, field_errors: list[FieldError], status: str = "validation-error") -> None:
        self.field_errors = field_errors
        self.status = status
        super().__init__(
            f"{status}: " + "; ".join(map(str, field_errors)) if field_errors else status
        )

    @property
    def is_duplicate(self) -> bool:
        """The vendor's duplicate protection refused it: an order for the property exists."""
        return "duplicate" in self.status.lower() or is_duplicate_answer(
            [(e.attr, e.message) for e in self.field_errors]
        )


@dataclass(frozen=True, slots=True)
class VendorOrder:
    """The vendor's view of an order; unknown statuses and extra fields are kept, not refused."""

    order_id: str | None
    request_id: str | None
    order_status: str | None
    raw: Mapping[str, Any] = field(default_factory=dict)


class PlanomaticClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        observer: Callable[[str, str], None] | None = None,
    ) -> None:
        """`observer(operation, outcome)` hears of every call (for metrics): the operation is
        create, retrieve or cancel; the outcome the HTTP status, or timeout, connect_error or
        connection_lost when no status arrived."""
        self._api_key = api_key
        self._observer = observer
        self._client = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
            verify=True,
            trust_env=False,
            follow_redirects=False,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "propready"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PlanomaticClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_order(self, payload: Mapping[str, Any]) -> VendorOrder:
        return _order_from(self._post(CREATE_PATH, dict(payload)))

    def retrieve_order(
        self, order_id: str | None = None, *, request_id: str | None = None
    ) -> VendorOrder:
        """The vendor's current view of an order, by `order_id` or `request_id`."""
        return _order_from(self._post(RETRIEVE_PATH, _order_ref(order_id, request_id)))

    def cancel_order(
        self,
        order_id: str | None,
        reason: str,
        notes: str,
        *,
        request_id: str | None = None,
    ) -> VendorOrder:
        """Cancel one order (the API takes one per request).

        The contract's own limits are checked first (CancelRefused, nothing sent): `reason` is
        `duplicate_order` or `client_requested_cancelation`, `notes` 1 to 255 characters. The
        vendor refuses orders past `scheduling` with a VendorRejected naming `order_id`.
        """
        check_cancel_request(reason, notes)
        body = {**_order_ref(order_id, request_id), "cancelation_reason": reason, "notes": notes}
        return _order_from(self._post(CANCEL_PATH, body))

    def _post(self, path: str, body: dict[str, Any]) -> Mapping[str, Any]:
        body["api_key"] = self._api_key
        operation = path.rsplit("/", 1)[-1]
        try:
            response = self._client.post(path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._observe(operation, "connect_error")
            raise VendorUnreachable(f"cannot connect to PlanOmatic: {type(exc).__name__}") from None
        except httpx.TimeoutException as exc:
            self._observe(operation, "timeout")
            raise VendorAmbiguous(
                f"no answer in time after sending: {type(exc).__name__}"
            ) from None
        except httpx.TransportError as exc:
            self._observe(operation, "connection_lost")
            raise VendorAmbiguous(f"connection lost after sending: {type(exc).__name__}") from None
        self._observe(operation, str(response.status_code))
        return _interpret(response)

    def _observe(self, operation: str, outcome: str) -> None:
        if self._observer is not None:
            self._observer(operation, outcome)


def _interpret(response: httpx.Response) -> Mapping[str, Any]:
    body = _json_or_none(response)
    status = response.status_code
    if 200 <= status < 300:
        if body is None:
            raise VendorAmbiguous(f"HTTP {status} with a body that is not JSON")
        # Every answer carries a `code` mirroring the result; trust a failure code over the
        # HTTP status, in case a proxy or the vendor wraps errors in a 200.
        code = body.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and code >= 300:
            status = code
        else:
            return body
    if status == 429:
        raise VendorRateLimited("HTTP 429 rate-limit-exceeded")
    if status in (401, 403):
        words = str(body.get("status") or body.get("message") or "") if body else ""
        raise VendorKeyRefused(f"HTTP {status} {words}".strip())
    if status == 400 and body is not None:
        raw_errors = body.get("errors")
        errors = [
            FieldError(str(e.get("attr", "?")), str(e.get("message", "?")))
            for e in (raw_errors if isinstance(raw_errors, list) else [])
            if isinstance(e, Mapping)
        ]
        key_errors = [e for e in errors if e.attr == "api_key"]
        if key_errors:
            raise VendorKeyRefused("; ".join(map(str, key_errors)))
        raise VendorRejected(errors, str(body.get("status", "validation-error")))
    if status == 400:
        # Not the vendor's error format: whoever answered, we cannot prove nothing was saved.
        raise VendorAmbiguous("HTTP 400 without the vendor's error format")
    if status in (502, 503, 504) and body is None:
        # A gateway page: the gateway may have forwarded the request before failing.
        raise VendorAmbiguous(f"HTTP {status} from a gateway")
    if status >= 500:
        raise VendorAmbiguous(f"HTTP {status} {body.get('status', '') if body else ''}".strip())
    raise VendorAmbiguous(f"unexpected HTTP {status}")


def _json_or_none(response: httpx.Response) -> Mapping[str, Any] | None:
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, Mapping) else None


def _order_from(body: Mapping[str, Any]) -> VendorOrder:
    data = body.get("data", body)
    if not isinstance(data, Mapping):
        data = {}
    order_id = data.get("order_id")
    request_id = data.get("request_id")
    status = data.get("order_status")
    return VendorOrder(
        order_id=str(order_id) if order_id is not None else None,
        request_id=str(request_id) if request_id is not None else None,
        order_status=str(status) if status is not None else None,
        raw={k: v for k, v in data.items() if k != "property_access"},
    )


def _order_ref(order_id: str | None, request_id: str | None) -> dict[str, Any]:
    if request_id is not None:
        return {"request_id": _as_int(request_id)}
    if order_id is None:
        raise ValueError("an order_id or a request_id is required")
    return {"order_id": _as_int(order_id)}


def _as_int(value: str) -> int | str:
    # The retrieve docs type ids as integers, the cancel schema as strings: send digits as int.
    return int(value) if value.isdigit() else value
