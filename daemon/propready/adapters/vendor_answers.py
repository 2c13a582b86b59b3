"""Reading PlanOmatic's answers defensively: bounded size and depth, ids and statuses checked.

An answer is outside our control, so nothing in it may crash the daemon or reach the database
unchecked:
- the body is read up to `MAX_ANSWER_BYTES` (decoded; a gzip bomb counts at its real size);
- JSON nested deeper than `MAX_JSON_DEPTH` is refused, also when it is too deep for the parser
  itself (a RecursionError never escapes);
- `order_id` and `request_id` must be an integer or a short token, at most 64 characters (the
  orders table's `vendor_order_id` and `vendor_request_id` are String(64)); `order_status` must
  be printable text of at most 64 characters (`vendor_status`). A value that does not fit is
  dropped and named in `anomalies`; the caller decides whether the answer is still usable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_ANSWER_BYTES = 1_000_000
MAX_JSON_DEPTH = 32
MAX_VENDOR_TEXT = 64  # vendor_order_id, vendor_request_id, vendor_status are String(64)
MAX_FIELD_ERRORS = 50
MAX_ERROR_TEXT = 255

_ID_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_STATUS = re.compile(r"^[\x20-\x7e]{1,64}$")


class AnswerTooLarge(ValueError):
    """The body is over MAX_ANSWER_BYTES."""


def read_capped(chunks: Iterable[bytes], limit: int = MAX_ANSWER_BYTES) -> bytes:
    """Join `chunks`, refusing (AnswerTooLarge) as soon as they exceed `limit` bytes."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise AnswerTooLarge(f"the answer is larger than {limit:,} bytes")
    return bytes(body)


def parse_json(content: bytes) -> tuple[Any, str | None]:
    """(value, None), or (None, why) when the body is not JSON or is nested too deeply."""
    try:
        value = json.loads(content)
    except RecursionError:
        return None, f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    except (ValueError, UnicodeDecodeError):
        return None, "not JSON"
    if _depth_over(value, MAX_JSON_DEPTH):
        return None, f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    return value, None


def _depth_over(value: Any, limit: int) -> bool:
    """Whether `value` nests containers deeper than `limit` (iterative: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


@dataclass(frozen=True, slots=True)
class VendorOrder:
    """The vendor's view of an order; unknown statuses and extra fields are kept, not refused.

    `anomalies` names each id or status that was present but unusable (and is None here).
    """

    order_id: str | None
    request_id: str | None
    order_status: str | None
    raw: Mapping[str, Any] = field(default_factory=dict)
    anomalies: tuple[str, ...] = ()


def vendor_id(value: Any) -> str | None:
    """An order or request id as text, or None when it is not one we can store."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value)
        return text if value >= 0 and len(text) <= MAX_VENDOR_TEXT else None
    if isinstance(value, str) and _ID_TOKEN.match(value):
        return value
    return None


def vendor_status(value: Any) -> str | None:
    """A status as text, or None when it is not short printable text."""
    return value if isinstance(value, str) and _STATUS.match(value) else None


def describe_value(value: Any) -> str:
    """A short description of an unusable value, never the value itself in full."""
    if isinstance(value, str):
        return f"text of {len(value)} characters"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"a number of {len(str(value))} digits"
    return f"a {type(value).__name__}"


def order_from(body: Mapping[str, Any]) -> VendorOrder:
    """The order in a 2xx answer (`data`, or the body itself), every id and status checked."""
    data = body.get("data", body)
    if not isinstance(data, Mapping):
        data = {}
    anomalies = []
    checked: dict[str, str | None] = {}
    for key, check in (
        ("order_id", vendor_id),
        ("request_id", vendor_id),
        ("order_status", vendor_status),
    ):
        raw = data.get(key)
        checked[key] = check(raw) if raw is not None else None
        if raw is not None and checked[key] is None:
            anomalies.append(f"unusable {key}: {describe_value(raw)}")
    return VendorOrder(
        order_id=checked["order_id"],
        request_id=checked["request_id"],
        order_status=checked["order_status"],
        raw={k: v for k, v in data.items() if k != "property_access"},
        anomalies=tuple(anomalies),
    )


def field_errors_of(body: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """The (attr, message) pairs of the vendor's documented error shape, or None if not that.

    The documented shape (planomatic-api.md 1.1): `{"code": 400, "status": "validation-error",
    "errors": [{"attr": ..., "message": ...}, ...]}`; `errors` may be missing or null (the
    duplicate refusal may come as `{"code": 400, "status": "duplicate-order"}`). A 400 from a
    proxy or a web application firewall rarely has this shape; when it is missing, nobody can
    say that nothing was saved, so the caller treats it as ambiguous.
    """
    code, status, errors = body.get("code"), body.get("status"), body.get("errors")
    if code != 400 or isinstance(code, bool) or not isinstance(status, str) or not status:
        return None
    if errors is None:
        return []
    if not isinstance(errors, list):
        return None
    pairs = []
    for error in errors:
        if not isinstance(error, Mapping):
            return None
        attr, message = error.get("attr"), error.get("message")
        if not isinstance(attr, str) or not isinstance(message, str):
            return None
        pairs.append((attr[:MAX_ERROR_TEXT], message[:MAX_ERROR_TEXT]))
    return pairs[:MAX_FIELD_ERRORS]
