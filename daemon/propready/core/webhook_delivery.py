"""From the bytes of one webhook delivery to the row the receiver stores (pure: no I/O).

Every delivery that passed the token and size checks is kept, whatever it holds (design.md
8.2): the vendor's queue is strictly ordered, so refusing one body would hold back every later
one for an hour. `interpret` decides how it is kept:

- `pending`: JSON that reads as news about an order (`core.vendor_news`), waiting to be applied;
- `malformed`: anything else (not JSON, not an object, no order named, too deep, NaN), kept
  with the reason for a person to read and never applied.

Before anything is stored or hashed, secret fields are masked (`core.secret_fields`), and text
the databases cannot hold is replaced: PostgreSQL refuses NUL characters in text and JSON, and
neither database takes lone UTF-16 surrogates (`"\\ud800"` is valid JSON). The dedupe key is the
SHA-256 of the canonical JSON of the masked body (sorted keys, no spaces, UTF-8), so a delivery
the vendor repeats, byte for byte or with its keys reordered, is stored once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from propready.core.secret_fields import MASK, is_secret_key, redact_secret_text
from propready.core.vendor_news import (
    MalformedNews,
    VendorNews,
    parse_vendor_news,
    shape_problem,
)

MAX_BODY_BYTES = 1 << 20  # design.md 8.2: bodies over 1 MB are refused (413)


class DeliveryState(StrEnum):
    PENDING = "pending"  # stored, not applied yet
    APPLIED = "applied"  # applied to its order (applied_at says when)
    UNMATCHED = "unmatched"  # names no order we know (yet); kept for a person and a later try
    MALFORMED = "malformed"  # not news about an order; never applied


@dataclass(frozen=True)
class IncomingDelivery:
    """What the receiver stores for one delivery."""

    dedupe_hash: str
    state: DeliveryState
    body: Any  # the masked JSON value (None when the bytes are not JSON)
    raw_text: str | None  # the masked text of a body that is not JSON, else None
    news: VendorNews | None  # None when malformed
    problem: str | None  # why it is malformed, or what the parser had to drop


def interpret(raw: bytes) -> IncomingDelivery:
    """Classify, mask and fingerprint one delivery's body; never raises on any bytes."""
    parsed, reason = _load_json(raw)
    if reason is None:
        reason = shape_problem(parsed)  # before the recursive passes below
    if reason is not None:
        text = redact_secret_text(_storable_text(raw.decode("utf-8", errors="replace")))
        digest = hashlib.sha256(b"text:" + text.encode("utf-8")).hexdigest()
        return IncomingDelivery(digest, DeliveryState.MALFORMED, None, text, None, reason)
    body = _storable_masked(parsed)
    digest = hashlib.sha256(canonical_json(body)).hexdigest()
    # The receiver stores only the fields it sorts and matches on; the applier reads the
    # deliverables (photos, appointments, links) from the stored body.
    news = parse_vendor_news(body, with_deliverables=False, shape_checked=True)
    if isinstance(news, MalformedNews):
        return IncomingDelivery(digest, DeliveryState.MALFORMED, body, None, None, news.reason)
    problem = "; ".join(news.problems)[:2000] or None
    return IncomingDelivery(digest, DeliveryState.PENDING, body, None, news, problem)


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _load_json(raw: bytes) -> tuple[Any, str | None]:
    """(value, None), or (None, why it is not usable JSON)."""
    if not raw.strip():
        return None, "the body is empty"
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float), None
    except RecursionError:
        return None, "the body is nested too deeply to read"
    # JSONDecodeError and UnicodeDecodeError are ValueErrors, as is an integer of more than
    # 4,300 digits.
    except ValueError as exc:
        return None, f"the body is not JSON: {str(exc)[:200]}"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is too large for a number")
    return value


def _storable_masked(value: Any) -> Any:
    """The value with secrets masked (`core.secret_fields`) and every string, keys included,
    made storable in both databases: one pass, as this runs for every delivery."""
    if isinstance(value, dict):
        return {
            _storable_text(key): (
                MASK
                if item is not None and item != "" and is_secret_key(key)
                else _storable_masked(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_storable_masked(item) for item in value]
    if isinstance(value, str):
        return _storable_text(value)
    return value


def _storable_text(text: str) -> str:
    if text.isascii() and "\x00" not in text:
        return text  # the common case; ASCII holds no surrogates
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text
