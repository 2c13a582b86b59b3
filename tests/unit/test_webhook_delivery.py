"""From a delivery's bytes to what is stored: secrets masked, one fingerprint, never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propready.core.secret_fields import (
    MASK,
    is_secret_key,
    redact_secret_text,
    redact_secrets,
)
from propready.core.webhook_delivery import DeliveryState, canonical_json, interpret

BODY: dict[str, Any] = {
    "order_id": 100001,
    "external_order_id": "pr-1",
    "event": "appointment.scheduled",
    "event_datetime": "2026-12-01T10:00:00.000+00:00",
    "order_status": "scheduled",
    "property": {"location": {"postal_code": "80202", "state": "CO"}},
    "property_access": {
        "method_of_access": "lockbox_code",
        "access_code": "4711",
        "lockbox_location": "behind the A/C unit",
        "onsite_contact_phone": "+1 555-555-5555",
    },
}


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("access_code", True),
        ("ACCESS-CODE", True),
        ("lockbox_code", True),
        ("slockboxcode", True),
        ("gate_codes", True),
        ("keypad_code", True),
        ("door code", True),
        ("api_key", True),
        ("apiKey", True),
        ("webhook_token", True),
        ("password", True),
        ("client_secret", True),
        ("Authorization", True),
        ("pin", True),
        ("postal_code", False),
        ("country_code", False),
        ("code", False),
        ("cancelation_reason", False),
        ("lockbox_location", False),
        ("onsite_contact_phone", False),
        ("shipping_code", False),
    ],
)
def test_which_keys_are_secret(key: str, secret: bool) -> None:
    """Access codes, keys, tokens and passwords are secret; postal codes and the rest are not."""
    assert is_secret_key(key) is secret


def test_secrets_are_masked_at_any_depth() -> None:
    """A nested access code and a code inside a list of objects are masked; the rest stays."""
    body = {
        "order": {"property_access": {"access_code": "4711", "lockbox_location": "porch"}},
        "codes": [{"gate_code": 99}, {"gate_code": None}],
        "code": 200,
    }
    masked = redact_secrets(body)
    assert masked["order"]["property_access"] == {"access_code": MASK, "lockbox_location": "porch"}
    assert masked["codes"] == [{"gate_code": MASK}, {"gate_code": None}]
    assert masked["code"] == 200
    assert body["order"]["property_access"]["access_code"] == "4711"  # the input is not changed


def test_secrets_in_text_that_is_not_json_are_masked() -> None:
    """A truncated body still has its `"access_code": "..."` pairs masked."""
    text = '{"order_id": 1, "property_access": {"access_code": "4711", "api_key":abc, "x": "1"'
    masked = redact_secret_text(text)
    assert "4711" not in masked
    assert "abc" not in masked
    assert '"x": "1"' in masked
    assert '"order_id": 1' in masked


def test_a_delivery_is_stored_masked_and_pending() -> None:
    """News about an order: pending, masked, with the parsed record."""
    incoming = interpret(json.dumps(BODY).encode())
    assert incoming.state is DeliveryState.PENDING
    assert incoming.body["property_access"]["access_code"] == MASK
    assert "4711" not in json.dumps(incoming.body)
    assert incoming.news is not None
    assert incoming.news.vendor_order_id == "100001"
    assert incoming.news.status == "scheduled"
    assert incoming.problem is None


def test_the_fingerprint_ignores_key_order_and_whitespace() -> None:
    """The same delivery re-serialised differently has the same dedupe hash."""
    compact = json.dumps(BODY, separators=(",", ":")).encode()
    spaced = json.dumps(dict(reversed(list(BODY.items()))), indent=4).encode()
    assert interpret(compact).dedupe_hash == interpret(spaced).dedupe_hash
    changed = interpret(json.dumps({**BODY, "order_status": "on_site"}).encode())
    assert changed.dedupe_hash != interpret(compact).dedupe_hash


def test_bodies_differing_only_in_a_secret_are_one_delivery() -> None:
    """The hash is over the masked body, so no secret can be recovered from it."""
    other = json.loads(json.dumps(BODY))
    other["property_access"]["access_code"] = "9999"
    assert interpret(json.dumps(other).encode()).dedupe_hash == (
        interpret(json.dumps(BODY).encode()).dedupe_hash
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"not json", "not JSON"),
        (b'{"order_id": 1,', "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b'{"order_id": 1, "x": NaN}', "not JSON"),
        (b'{"order_id": 1, "x": Infinity}', "not JSON"),
        (b'{"order_id": 1, "x": 1e999}', "not JSON"),
        (b'{"order_id": 1, "x": ' + b"9" * 5000 + b"}", "not JSON"),
        (b"[" * 200_000 + b"]" * 200_000, "nested"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper"),
        (b"[1, 2]", "array"),
        (b'{"event": "order.delivered"}', "names no order"),
    ],
)
def test_what_cannot_be_news_is_kept_as_malformed(raw: bytes, reason: str) -> None:
    """Every such body is kept, flagged malformed with a reason, and never raises."""
    incoming = interpret(raw)
    assert incoming.state is DeliveryState.MALFORMED
    assert incoming.news is None
    assert incoming.problem is not None
    assert reason in incoming.problem
    assert len(incoming.dedupe_hash) == 64


def test_malformed_text_is_kept_masked() -> None:
    """A body that is not JSON is stored as text, its secret pairs masked."""
    incoming = interpret(b'{"order_id": 1, "access_code": "4711", oops')
    assert incoming.body is None
    assert incoming.raw_text is not None
    assert "4711" not in incoming.raw_text
    assert "oops" in incoming.raw_text


def test_text_the_databases_refuse_is_replaced() -> None:
    """NUL characters and lone surrogates become U+FFFD: PostgreSQL and UTF-8 accept the rest."""
    raw = b'{"order_id": 1, "caption": "a\\u0000b", "\\ud800key": "c\\udc00"}'
    incoming = interpret(raw)
    assert incoming.state is DeliveryState.PENDING
    text = canonical_json(incoming.body).decode("utf-8")
    assert "\x00" not in text
    assert "a\ufffdb" in text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_interpreted_without_raising(raw: bytes) -> None:
    """Whatever bytes arrive with a valid token, there is a row to store."""
    incoming = interpret(raw)
    assert incoming.state in (DeliveryState.PENDING, DeliveryState.MALFORMED)
    if incoming.body is not None:
        canonical_json(incoming.body)  # storable
    if incoming.raw_text is not None:
        incoming.raw_text.encode("utf-8")
