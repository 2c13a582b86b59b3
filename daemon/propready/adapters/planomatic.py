"""PlanOmatic V3 Order API client (httpx, synchronous).

Exception hierarchy (callers branch on these, never on httpx's):

    VendorError
    ├── VendorNotReached      the request provably did not reach PlanOmatic: safe to send again
    │   ├── VendorRateLimited   HTTP 429
    │   ├── VendorUnreachable   connection refused, DNS failure, connect timeout
    │   └── VendorKeyRefused    HTTP 401/403, or a 400 naming `api_key`: a configuration
    │                           failure (nothing was created), not an order outcome
    ├── VendorRejected        HTTP 400 in the vendor's error shape: final; `field_errors` names
    │                         each field
    └── VendorAmbiguous       5xx, a timeout or the total deadline passed, connection dropped after
                              the request was written, an unreadable, oversized or too deeply
                              nested answer, a 400 without the vendor's error shape, a create
                              answer without a usable order id: the order may or may not exist

Every request has a total deadline of `timeout_seconds` (connect, write and read together; see
http_deadline), and answers are read defensively (vendor_answers): at most 1 MB, JSON at most 32
levels deep, ids and statuses checked before they can reach the database.

The api_key travels in the JSON body (the vendor's design), never in a URL; no message here ever
contains it or the request body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from propready.adapters.http_deadline import Deadline
from propready.adapters.vendor_answers import (
    MAX_ANSWER_BYTES,
    MAX_ERROR_TEXT,
    AnswerTooLarge,
    VendorOrder,
    field_errors_of,
    order_from,
    parse_json,
    read_capped,
)
from propready.core.orders import check_cancel_request, is_duplicate_answer

__all__ = [
    "CANCEL_PATH",
    "CREATE_PATH",
    "RETRIEVE_PATH",
    "FieldError",
    "PlanomaticClient",
    "VendorAmbiguous",
    "VendorError",
    "VendorNotReached",
    "VendorOrder",
    "VendorRateLimited",
    "VendorRejected",
    "VendorUnreachable",
]

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
        create, retrieve or cancel; the outcome the HTTP status, or timeout, connect_error,
        connection_lost or oversized (an answer over 1 MB, not read) when no status arrived.
        `timeout_seconds` bounds each whole request, not each read."""
        self._api_key = api_key
        self._observer = observer
        self._timeout_seconds = timeout_seconds
        self._client = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
            verify=True,
            trust_env=False,
            follow_redirects=False,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "propready"},
            # A fresh connection per request: the total deadline can only cut a socket it saw
            # being opened (http_deadline), and a kept-alive connection that the vendor closed
            # meanwhile would turn a create into an ambiguous "connection lost". At 50 to 100
            # requests a minute the extra handshakes cost nothing that matters.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PlanomaticClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_order(self, payload: Mapping[str, Any]) -> VendorOrder:
        """Create one order; VendorOrder always carries a usable `order_id`.

        A success answer without one (missing, over-long, not an id) raises VendorAmbiguous:
        the vendor said yes, so the order may well exist, but without its id it can be neither
        retrieved nor canceled; an operator settles it (`orders resolve`). An unusable
        `request_id` or `order_status` next to a good order id is dropped and listed in
        `anomalies`.
        """
        order = order_from(self._post(CREATE_PATH, dict(payload)))
        if order.order_id is None:
            why = "; ".join(order.anomalies) or "no order_id"
            hint = f" (request_id {order.request_id})" if order.request_id else ""
            raise VendorAmbiguous(
                f"PlanOmatic accepted the order but its answer has no usable order id ({why})"
                f"{hint}: the order may exist"
            )
        return order

    def retrieve_order(
        self, order_id: str | None = None, *, request_id: str | None = None
    ) -> VendorOrder:
        """The vendor's current view of an order, by `order_id` or `request_id`.

        An answer whose id or status cannot be stored raises VendorAmbiguous: recording it
        would lose the status we know.
        """
        order = order_from(self._post(RETRIEVE_PATH, _order_ref(order_id, request_id)))
        if order.anomalies:
            raise VendorAmbiguous("unusable retrieve answer: " + "; ".join(order.anomalies))
        return order

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
        return order_from(self._post(CANCEL_PATH, body))

    def _post(self, path: str, body: dict[str, Any]) -> Mapping[str, Any]:
        body["api_key"] = self._api_key
        operation = path.rsplit("/", 1)[-1]
        deadline = Deadline(self._timeout_seconds)
        try:
            with deadline:
                status, content = self._exchange(path, body, deadline)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if deadline.expired:  # cut by the deadline while connecting: nothing was sent
                self._observe(operation, "timeout")
            else:
                self._observe(operation, "connect_error")
            raise VendorUnreachable(f"cannot connect to PlanOmatic: {type(exc).__name__}") from None
        except httpx.TimeoutException as exc:
            self._observe(operation, "timeout")
            raise VendorAmbiguous(
                f"no answer in time after sending: {type(exc).__name__}"
            ) from None
        except httpx.TransportError as exc:
            if deadline.expired:
                self._observe(operation, "timeout")
                raise VendorAmbiguous(
                    f"no answer in time after sending: no complete answer within "
                    f"{self._timeout_seconds:g} s (planomatic.timeout_seconds, the total deadline)"
                ) from None
            self._observe(operation, "connection_lost")
            raise VendorAmbiguous(f"connection lost after sending: {type(exc).__name__}") from None
        except AnswerTooLarge as exc:
            self._observe(operation, "oversized")
            raise VendorAmbiguous(f"{exc}; not read") from None
        self._observe(operation, str(status))
        return _interpret(status, content)

    def _exchange(self, path: str, body: dict[str, Any], deadline: Deadline) -> tuple[int, bytes]:
        """POST and read the answer (streamed, so its size is checked as it arrives)."""
        with self._client.stream(
            "POST", path, json=body, extensions={"trace": deadline.extension}
        ) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(f"the answer announces {int(declared):,} bytes")
            return response.status_code, read_capped(response.iter_bytes())

    def _observe(self, operation: str, outcome: str) -> None:
        if self._observer is not None:
            self._observer(operation, outcome)


def _interpret(status: int, content: bytes) -> Mapping[str, Any]:
    value, unreadable = parse_json(content)
    body: Mapping[str, Any] | None = value if isinstance(value, Mapping) else None
    if body is None and unreadable is None:
        unreadable = "not a JSON object"
    if 200 <= status < 300:
        if body is None:
            raise VendorAmbiguous(f"HTTP {status} with a body that is {unreadable}")
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
        raise VendorKeyRefused(f"HTTP {status} {words}"[:MAX_ERROR_TEXT].strip())
    pairs = field_errors_of(body) if status == 400 and body is not None else None
    if pairs is not None and body is not None:
        key_errors = [f"{attr}: {message}" for attr, message in pairs if attr == "api_key"]
        if key_errors:
            raise VendorKeyRefused("; ".join(key_errors)[:MAX_ERROR_TEXT])
        errors = [FieldError(attr, message) for attr, message in pairs]
        raise VendorRejected(errors, str(body["status"])[:MAX_ERROR_TEXT])
    if status == 400:
        # Not the vendor's error format: whoever answered, we cannot prove nothing was saved.
        raise VendorAmbiguous("HTTP 400 without the vendor's error format")
    if status in (502, 503, 504) and body is None:
        # A gateway page: the gateway may have forwarded the request before failing.
        raise VendorAmbiguous(f"HTTP {status} from a gateway")
    if status >= 500:
        raise VendorAmbiguous(f"HTTP {status} {body.get('status', '') if body else ''}".strip())
    raise VendorAmbiguous(f"unexpected HTTP {status}")


def _order_ref(order_id: str | None, request_id: str | None) -> dict[str, Any]:
    if request_id is not None:
        return {"request_id": _as_int(request_id)}
    if order_id is None:
        raise ValueError("an order_id or a request_id is required")
    return {"order_id": _as_int(order_id)}


def _as_int(value: str) -> int | str:
    # The retrieve docs type ids as integers, the cancel schema as strings: send digits as int.
    return int(value) if value.isdigit() else value
