"""`propready sandbox`, the PlanOmatic V3 Order API look-alike, driven over a loopback socket."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from click.testing import CliRunner

from propready.adapters.catalog_file import load_catalog
from propready.adapters.sandbox import SandboxConfig, SandboxServer, validate_create
from propready.cli.sandbox_command import sandbox_command

CREATE = "/api/v3/orders/create"
RETRIEVE = "/api/v3/orders/retrieve"
CANCEL = "/api/v3/orders/cancel"
KEY = "key-a"
OTHER_KEY = "key-b"
ENTITY = "investment_entity_1"
ACCESS_CODE = "4711-secret"
START = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
CATALOG = load_catalog()


class SteppingClock:
    """A wall clock that moves only when a test says so."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Sandbox:
    server: SandboxServer
    client: httpx.Client
    clock: SteppingClock

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.client.post(path, json=body)

    def create(self, **overrides: Any) -> httpx.Response:
        return self.post(CREATE, order_body(**overrides))

    def cancel(self, order_id: Any, key: str = KEY) -> httpx.Response:
        body = {
            "api_key": key,
            "order_id": order_id,
            "cancelation_reason": "client_requested_cancelation",
            "notes": "tenant stayed",
        }
        return self.post(CANCEL, body)


def make_config(**overrides: Any) -> SandboxConfig:
    keys = {KEY: frozenset({ENTITY, "investment_entity_2"}), OTHER_KEY: frozenset({"other_llc"})}
    return SandboxConfig(api_keys=keys, catalog=CATALOG, **overrides)


def order_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "api_key": KEY,
        "external_property_id": "unit-1001",
        "billing_entity_slug": ENTITY,
        "external_order_id": "po-77",
        "metadata": {"unit_code": "1001"},
        "services": [{"slug": "photos", "quantity": 25}],
        "property": {
            "location": {
                "street": "12 Main St",
                "city": "Denver",
                "state": "CO",
                "postal_code": "80202",
            },
            "property_type": "single_family",
            "bedrooms": 3,
            "bathrooms": "2.5",
        },
        "property_access": {
            "vacant": True,
            "method_of_access": "lockbox_code",
            "access_code": ACCESS_CODE,
            "lockbox_location": "front door",
            "onsite_contact_name": "Pat Lee",
            "onsite_contact_phone": "+1 555-555-5555",
            "preferred_date": "2026-07-03",
        },
    }
    body.update(overrides)
    return body


def nested(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the dotted `path` set to `value`, or removed when value is ...."""
    changed = copy.deepcopy(body)
    *parents, leaf = path.split(".")
    target = changed
    for name in parents:
        target = target[name]
    if value is ...:
        del target[leaf]
    else:
        target[leaf] = value
    return changed


def errors_of(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["status"]) == (400, "validation-error")
    return [(error["attr"], error["message"]) for error in body["errors"]]


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., Sandbox]]:
    started: list[Sandbox] = []

    def start(**config_overrides: Any) -> Sandbox:
        clock = SteppingClock(START)
        server = SandboxServer(make_config(**config_overrides), clock=clock).start()
        client = httpx.Client(base_url=server.url, trust_env=False, timeout=10)
        started.append(Sandbox(server, client, clock))
        return started[-1]

    yield start
    for sandbox in started:
        sandbox.client.close()
        sandbox.server.stop()


@pytest.fixture
def sandbox(start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return start_sandbox()


# --- transport and envelope -------------------------------------------------------------------


def test_create_answers_201_with_the_stored_order(sandbox: Sandbox) -> None:
    """A valid create answers 201 action-successful with the order under `data`, as stored."""
    response = sandbox.create()
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["code"], body["status"]) == (201, "action-successful")
    assert body["data"]["order_status"] == "new_request"
    assert body["data"]["legacy_order_id"] is None
    assert sandbox.server.orders == [body["data"]]


def test_ids_count_up_from_the_documented_bases(sandbox: Sandbox) -> None:
    """order_id counts from 100001 and request_id from 500001, one step per accepted order."""
    first, second = sandbox.create().json()["data"], sandbox.create().json()["data"]
    assert (first["order_id"], first["request_id"]) == (100001, 500001)
    assert (second["order_id"], second["request_id"]) == (100002, 500002)


def test_order_echoes_the_request_except_the_api_key(sandbox: Sandbox) -> None:
    """The order echoes every request field, unknown ones too, but never the api_key."""
    request = order_body(order_status="completed", order_id=1, campaign="spring")
    order = sandbox.post(CREATE, request).json()["data"]
    assert "api_key" not in order
    assert KEY not in sandbox.post(CREATE, request).text
    assert order["campaign"] == "spring"
    assert order["property"] == request["property"]
    assert order["services"] == request["services"]
    # Vendor-assigned fields cannot be forged by the client's echo.
    assert (order["order_status"], order["order_id"]) == ("new_request", 100001)
    assert order["created"] == "2026-07-01T12:00:00.000+00:00"


def test_only_post_to_the_three_actions_is_served(sandbox: Sandbox) -> None:
    """Other methods get a JSON 405 (retrieve is POST too); unknown paths a JSON 404."""
    response = sandbox.client.get(RETRIEVE)
    assert response.status_code == 405
    assert response.json() == {"code": 405, "status": "method-not-allowed"}
    assert response.headers["allow"] == "POST"
    assert sandbox.client.put(CREATE, json=order_body()).status_code == 405
    unknown = sandbox.post("/api/v3/orders/update", order_body())
    assert (unknown.status_code, unknown.json()) == (404, {"code": 404, "status": "not-found"})


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_rejected(sandbox: Sandbox, raw: bytes) -> None:
    """A body that is not a JSON object answers 400 with attr body / invalid_json."""
    response = sandbox.client.post(CREATE, content=raw)
    assert response.json() == {
        "code": 400,
        "status": "validation-error",
        "errors": [{"attr": "body", "message": "invalid_json"}],
    }


def test_requests_seen_counts_rejected_requests_too(sandbox: Sandbox) -> None:
    """requests_seen counts every request, whatever it was answered."""
    sandbox.create()
    sandbox.client.get(CREATE)
    sandbox.post("/nowhere", {})
    sandbox.client.post(CREATE, content=b"{")
    assert sandbox.server.requests_seen() == 4


# --- create validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_key", "message"),
    [(..., "missing"), (None, "missing"), ("wrong", "unauthorized"), (42, "unauthorized")],
)
def test_api_key_must_be_sent_and_known(sandbox: Sandbox, api_key: Any, message: str) -> None:
    """A missing key is `missing`, an unknown one `unauthorized`, and no order is stored."""
    body = nested(order_body(), "api_key", api_key)
    assert errors_of(sandbox.post(CREATE, body)) == [("api_key", message)]
    assert sandbox.server.orders == []


def test_billing_entity_must_be_linked_to_the_key(sandbox: Sandbox) -> None:
    """A billing entity of another key is `unauthorized`; a missing one is `missing`."""
    response = sandbox.create(billing_entity_slug="other_llc")
    assert errors_of(response) == [("billing_entity_slug", "unauthorized")]
    missing = sandbox.post(CREATE, nested(order_body(), "billing_entity_slug", ...))
    assert errors_of(missing) == [("billing_entity_slug", "missing")]


def test_every_missing_top_level_field_is_reported_at_once(sandbox: Sandbox) -> None:
    """All failing fields come back together in one errors array, in the documented paths."""
    assert errors_of(sandbox.post(CREATE, {"api_key": KEY})) == [
        ("external_property_id", "missing"),
        ("billing_entity_slug", "missing"),
        ("property{}", "missing"),
        ("services", "missing"),
        ("property_access{}", "missing"),
    ]


def test_empty_nested_objects_report_each_required_field(sandbox: Sandbox) -> None:
    """Empty location and property_access objects report every required field inside them."""
    body = order_body(property={"location": {}}, property_access={})
    assert errors_of(sandbox.post(CREATE, body)) == [
        ("property.location.street", "missing"),
        ("property.location.city", "missing"),
        ("property.location.state", "missing"),
        ("property.location.postal_code", "missing"),
        ("property_access.vacant", "missing"),
        ("property_access.method_of_access", "missing"),
        ("property_access.onsite_contact_name", "missing"),
        ("property_access.onsite_contact_phone", "missing"),
    ]
    no_location = sandbox.create(property={"property_type": "land"})
    assert errors_of(no_location) == [("property.location{}", "missing")]


def test_blank_text_is_empty_and_long_text_is_too_long(sandbox: Sandbox) -> None:
    """Blank required strings are `empty`; ids over 255 and notes over 1000 are `too_long`."""
    body = nested(order_body(), "property.location.street", "")
    body = nested(body, "property.location.city", "   ")
    body.update(external_property_id="x" * 256, external_order_id="y" * 256, order_notes="z" * 1001)
    assert errors_of(sandbox.post(CREATE, body)) == [
        ("external_property_id", "too_long"),
        ("property.location.street", "empty"),
        ("property.location.city", "empty"),
        ("external_order_id", "too_long"),
        ("order_notes", "too_long"),
    ]
    assert errors_of(sandbox.create(external_property_id="")) == [("external_property_id", "empty")]
    assert sandbox.create(order_notes="n" * 1000, external_order_id="o" * 255).status_code == 201


@pytest.mark.parametrize(
    ("state", "accepted"),
    [("CO", True), ("DC", True), ("WY", True), ("co", False), ("ZZ", False), ("PR", False),
     ("Colorado", False), (8, False), (["CO"], False)],
)  # fmt: skip
def test_state_must_be_a_capitalised_us_state(sandbox: Sandbox, state: Any, accepted: bool) -> None:
    """The 50 states and DC, in capitals, are accepted; anything else is `unrecognized`."""
    response = sandbox.post(CREATE, nested(order_body(), "property.location.state", state))
    if accepted:
        assert response.status_code == 201
    else:
        assert errors_of(response) == [("property.location.state", "unrecognized")]


def test_property_type_and_numbers_are_checked_when_present(sandbox: Sandbox) -> None:
    """property_type must be a PlanOcore value; counts and price numbers or numeric strings."""
    body = order_body()
    body["property"].update(
        property_type="castle", bedrooms="three", bathrooms=True, price="1,000", square_footage=[]
    )
    assert errors_of(sandbox.post(CREATE, body)) == [
        ("property.property_type", "unrecognized"),
        ("property.bedrooms", "unrecognized"),
        ("property.bathrooms", "unrecognized"),
        ("property.price", "unrecognized"),
        ("property.square_footage", "unrecognized"),
    ]
    # V2 payloads send numbers as text, so text that is a number passes.
    body["property"].update(
        property_type="condo_townhouse", bedrooms="3", bathrooms=2.5, price="2150.00",
        square_footage=1480,
    )  # fmt: skip
    assert sandbox.post(CREATE, body).status_code == 201


@pytest.mark.parametrize(("services", "message"), [([], "empty"), ({"photos": 25}, "invalid")])
def test_services_must_be_a_nonempty_list(sandbox: Sandbox, services: Any, message: str) -> None:
    """An empty services list is `empty`; a non-list is `invalid`."""
    assert errors_of(sandbox.create(services=services)) == [("services", message)]


def test_service_slug_and_quantity_follow_the_catalog(sandbox: Sandbox) -> None:
    """Unknown slugs and quantities the catalog does not allow are `unrecognized`, per item."""
    services = [
        {"slug": "photos", "quantity": 25},
        {"slug": "drone_video", "quantity": 1},
        {"slug": "photos", "quantity": 12},
        {"slug": "exterior_photos", "quantity": "3"},
        {"slug": "community_photography", "quantity": 0},
        {"slug": "back_exterior_photos"},
        "photos",
    ]
    assert errors_of(sandbox.create(services=services)) == [
        ("services[1].slug", "unrecognized"),
        ("services[2].quantity", "unrecognized"),
        ("services[3].quantity", "unrecognized"),
        ("services[4].quantity", "unrecognized"),
        ("services[5].quantity", "missing"),
        ("services[6]", "invalid"),
    ]


def test_catalog_required_fields_are_enforced_per_service(sandbox: Sandbox) -> None:
    """ai_virtual_staging needs previous_order_id, because the catalog says so."""
    staging = {"slug": "ai_virtual_staging", "quantity": 5}
    assert errors_of(sandbox.create(services=[staging])) == [
        ("services[0].previous_order_id", "missing")
    ]
    with_previous = {**staging, "previous_order_id": "100001"}
    assert sandbox.create(services=[with_previous]).status_code == 201


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("lockbox_code", [("access_code", "missing"), ("lockbox_location", "missing")]),
        ("keypad", [("access_code", "missing")]),
        ("rently", []),
        ("no_access_needed", [("method_of_access", "access_required")]),
        ("front_door", [("method_of_access", "unrecognized")]),
        ({"kind": "keypad"}, [("method_of_access", "unrecognized")]),
    ],
)
def test_access_details_required_by_method(
    sandbox: Sandbox, method: Any, expected: list[tuple[str, str]]
) -> None:
    """Lockboxes need a code and a location, keypads a code; photos (access_required in the
    catalog) cannot be ordered with no_access_needed."""
    access = {
        "vacant": True,
        "method_of_access": method,
        "onsite_contact_name": "Pat Lee",
        "onsite_contact_phone": "+1 555-555-5555",
    }
    response = sandbox.create(property_access=access)
    if expected:
        assert errors_of(response) == [(f"property_access.{a}", m) for a, m in expected]
    else:
        assert response.status_code == 201


def test_no_access_needed_takes_only_services_without_entry(sandbox: Sandbox) -> None:
    """Exterior photos need no entry: no_access_needed is accepted for them, vacant or not."""
    access = {
        "vacant": False,
        "method_of_access": "no_access_needed",
        "onsite_contact_name": "Pat Lee",
        "onsite_contact_phone": "+1 555-555-5555",
    }
    services = [{"slug": "exterior_photos", "quantity": 3}]
    assert sandbox.create(property_access=access, services=services).status_code == 201


def test_an_occupied_home_takes_only_no_access_needed(sandbox: Sandbox) -> None:
    """vacant false with a lockbox is `not_allowed`: the vendor enters occupied homes by no key."""
    body = nested(order_body(), "property_access.vacant", False)
    assert errors_of(sandbox.post(CREATE, body)) == [
        ("property_access.method_of_access", "not_allowed")
    ]


@pytest.mark.parametrize(
    ("postal_code", "accepted"),
    [("80202", True), ("80202-1234", True), ("02134", True), ("8020", False),
     ("80202-12", False), ("802021234", False), (" 80202", False), ("ABCDE", False)],
)  # fmt: skip
def test_postal_code_is_five_digits_or_zip_plus_four(
    sandbox: Sandbox, postal_code: str, accepted: bool
) -> None:
    """A postal code is 12345 or 12345-6789; anything else is `unrecognized`."""
    response = sandbox.post(
        CREATE, nested(order_body(), "property.location.postal_code", postal_code)
    )
    if accepted:
        assert response.status_code == 201
    else:
        assert errors_of(response) == [("property.location.postal_code", "unrecognized")]


def test_contact_phone_email_and_access_lengths(sandbox: Sandbox) -> None:
    """A phone needs 10-15 digits, an email an @; codes and locations stop at 255, email at 254."""
    body = order_body()
    body["property_access"].update(
        onsite_contact_phone="555-0100",
        onsite_contact_email="pat.example.com",
        access_code="1" * 256,
        lockbox_location="l" * 256,
        onsite_contact_name="n" * 256,
    )
    assert errors_of(sandbox.post(CREATE, body)) == [
        ("property_access.access_code", "too_long"),
        ("property_access.lockbox_location", "too_long"),
        ("property_access.onsite_contact_name", "too_long"),
        ("property_access.onsite_contact_phone", "unrecognized"),
        ("property_access.onsite_contact_email", "unrecognized"),
    ]
    body["property_access"].update(
        onsite_contact_phone="(303) 555-0100 ext. 12",
        onsite_contact_email="p" * 242 + "@example.com",
        access_code="1" * 255,
        lockbox_location="l" * 255,
        onsite_contact_name="n" * 255,
    )
    assert sandbox.post(CREATE, body).status_code == 201
    body["property_access"]["onsite_contact_email"] = "p" * 243 + "@example.com"
    assert errors_of(sandbox.post(CREATE, body)) == [
        ("property_access.onsite_contact_email", "too_long")
    ]


def test_vacancy_and_onsite_contact_are_checked(sandbox: Sandbox) -> None:
    """vacant must be a boolean; the on-site contact's name and phone must not be blank."""
    body = order_body()
    body["property_access"].update(vacant="yes", onsite_contact_name="", onsite_contact_phone=" ")
    assert errors_of(sandbox.post(CREATE, body)) == [
        ("property_access.vacant", "invalid"),
        ("property_access.onsite_contact_name", "empty"),
        ("property_access.onsite_contact_phone", "empty"),
    ]


@pytest.mark.parametrize(
    ("preferred_date", "accepted"),
    [("2026-07-03", True), ("2020-01-31", True), ("2026-02-30", False), ("07/03/2026", False),
     ("2026-07-03T09:00:00", False), (20260703, False)],
)  # fmt: skip
def test_preferred_date_must_be_an_iso_date(
    sandbox: Sandbox, preferred_date: Any, accepted: bool
) -> None:
    """preferred_date must be a real YYYY-MM-DD date; past dates are allowed."""
    body = nested(order_body(), "property_access.preferred_date", preferred_date)
    response = sandbox.post(CREATE, body)
    if accepted:
        assert response.status_code == 201
    else:
        assert errors_of(response) == [("property_access.preferred_date", "unrecognized")]


def test_metadata_limits(sandbox: Sandbox) -> None:
    """Metadata allows 4 entries, keys of [A-Za-z0-9_] up to 60 chars and string values to 255."""
    metadata = {
        "ok_key": "v",
        "bad key": "v",
        "k" * 61: "v",
        "long_value": "v" * 256,
        "count": 3,
    }
    assert errors_of(sandbox.create(metadata=metadata)) == [
        ("metadata", "too_many_keys"),
        ("metadata.bad key", "invalid"),
        (f"metadata.{'k' * 61}", "too_long"),
        ("metadata.long_value", "too_long"),
        ("metadata.count", "invalid"),
    ]
    limits = {"k" * 60: "v" * 255, "a": "", "b_2": "x", "C": "y"}
    assert sandbox.create(metadata=limits).status_code == 201


def test_dash_in_metadata_keys_is_a_switch(start_sandbox: Callable[..., Sandbox]) -> None:
    """A dash in a metadata key is `invalid` unless allow_dash_in_metadata_keys is set."""
    strict, lenient = start_sandbox(), start_sandbox(allow_dash_in_metadata_keys=True)
    metadata = {"unit-code": "1001"}
    assert errors_of(strict.create(metadata=metadata)) == [("metadata.unit-code", "invalid")]
    assert lenient.create(metadata=metadata).status_code == 201


def test_validate_create_needs_no_socket() -> None:
    """validate_create is a pure function: a valid body gives no errors, a bad one lists them."""
    config = make_config()
    assert validate_create(order_body(), config) == []
    assert validate_create(order_body(services=[]), config) == [
        {"attr": "services", "message": "empty"}
    ]


# --- rate limit -------------------------------------------------------------------------------


def test_rate_limit_is_per_api_key(start_sandbox: Callable[..., Sandbox]) -> None:
    """Past the limit a key gets 429 rate-limit-exceeded while another key is still served."""
    sandbox = start_sandbox(rate_limit=2)
    assert [sandbox.create().status_code for _ in range(3)] == [201, 201, 429]
    limited = sandbox.create()
    assert (limited.status_code, limited.json()) == (
        429,
        {"code": 429, "status": "rate-limit-exceeded"},
    )
    other = sandbox.create(api_key=OTHER_KEY, billing_entity_slug="other_llc")
    assert other.status_code == 201
    assert len(sandbox.server.orders) == 3


def test_rate_limit_is_checked_before_validation(start_sandbox: Callable[..., Sandbox]) -> None:
    """Invalid requests count against the key, and a limited key gets 429 before validation."""
    sandbox = start_sandbox(rate_limit=1)
    assert sandbox.post(CREATE, {"api_key": KEY}).status_code == 400
    assert sandbox.post(RETRIEVE, {"api_key": KEY}).status_code == 429


def test_rate_window_resets_when_the_clock_moves_on(start_sandbox: Callable[..., Sandbox]) -> None:
    """A new fixed window starts once rate_window_seconds have passed on the injected clock."""
    sandbox = start_sandbox(rate_limit=1, rate_window_seconds=60)
    assert sandbox.create().status_code == 201
    sandbox.clock.advance(seconds=59)
    assert sandbox.create().status_code == 429
    sandbox.clock.advance(seconds=1)
    assert sandbox.create().status_code == 201


# --- duplicate protection ---------------------------------------------------------------------


def test_duplicate_within_threshold_is_rejected(start_sandbox: Callable[..., Sandbox]) -> None:
    """A second live order for the property inside the threshold gets the configured keyword."""
    sandbox = start_sandbox(duplicate_threshold_hours=24, duplicate_message="duplicate-order")
    assert sandbox.create().status_code == 201
    sandbox.clock.advance(hours=23, minutes=59)
    assert errors_of(sandbox.create()) == [("external_property_id", "duplicate-order")]
    assert sandbox.create(external_property_id="unit-1002").status_code == 201
    sandbox.clock.advance(minutes=1)
    assert sandbox.create().status_code == 201


def test_duplicate_protection_spares_canceled_orders_and_other_keys(
    start_sandbox: Callable[..., Sandbox],
) -> None:
    """Canceled orders and orders of another api key do not count as duplicates."""
    sandbox = start_sandbox(duplicate_threshold_hours=24)
    first = sandbox.create().json()["data"]
    other = sandbox.create(api_key=OTHER_KEY, billing_entity_slug="other_llc")
    assert other.status_code == 201
    assert sandbox.cancel(first["order_id"]).status_code == 200
    assert sandbox.create().status_code == 201


def test_duplicates_are_accepted_when_protection_is_off(sandbox: Sandbox) -> None:
    """With the default threshold of 0 the same property can be ordered twice at once."""
    assert [sandbox.create().status_code for _ in range(2)] == [201, 201]


# --- retrieve ---------------------------------------------------------------------------------


def test_retrieve_by_order_id_or_request_id(sandbox: Sandbox) -> None:
    """Either id finds the order, as an int or a digit string; request_id wins over order_id."""
    first = sandbox.create().json()["data"]
    second = sandbox.create().json()["data"]
    lookups = [
        {"order_id": first["order_id"]},
        {"order_id": str(first["order_id"])},
        {"request_id": first["request_id"]},
        {"request_id": str(first["request_id"]), "order_id": second["order_id"]},
    ]
    for lookup in lookups:
        response = sandbox.post(RETRIEVE, {"api_key": KEY, **lookup})
        assert response.status_code == 200
        assert response.json() == {"code": 200, "status": "action-successful", "data": first}


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        ({}, [("order_id", "missing")]),
        ({"order_id": 999999}, [("order_id", "unrecognized")]),
        ({"order_id": "12a"}, [("order_id", "unrecognized")]),
        ({"request_id": -5}, [("request_id", "unrecognized")]),
        ({"api_key": OTHER_KEY, "order_id": 100001}, [("order_id", "unrecognized")]),
        ({"api_key": "wrong", "order_id": 100001}, [("api_key", "unauthorized")]),
    ],
)
def test_retrieve_rejects_unknown_foreign_or_malformed_ids(
    sandbox: Sandbox, lookup: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    """Unknown ids and orders of another key are both `order_id` / `unrecognized`."""
    assert sandbox.create().json()["data"]["order_id"] == 100001
    assert errors_of(sandbox.post(RETRIEVE, {"api_key": KEY, **lookup})) == expected


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_marks_the_order_canceled(sandbox: Sandbox) -> None:
    """A cancel answers 200 with the order now `canceled`, and the ledger agrees."""
    order_id = sandbox.create().json()["data"]["order_id"]
    response = sandbox.cancel(str(order_id))
    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["status"]) == (200, "action-successful")
    assert body["data"]["order_status"] == "canceled"
    assert body["data"]["cancelation_reason"] == "client_requested_cancelation"
    assert sandbox.server.orders[0]["order_status"] == "canceled"


def test_cancel_reports_every_malformed_field(sandbox: Sandbox) -> None:
    """Cancel needs an id, a known cancelation_reason and notes of 1 to 255 characters."""
    assert errors_of(sandbox.post(CANCEL, {"api_key": KEY})) == [
        ("order_id", "missing"),
        ("cancelation_reason", "missing"),
        ("notes", "missing"),
    ]
    bad = {"api_key": KEY, "order_id": 100001, "cancelation_reason": ["changed_mind"]}
    assert errors_of(sandbox.post(CANCEL, {**bad, "notes": ""})) == [
        ("cancelation_reason", "unrecognized"),
        ("notes", "empty"),
    ]
    too_long = {**bad, "cancelation_reason": "duplicate_order", "notes": "n" * 256}
    assert errors_of(sandbox.post(CANCEL, too_long)) == [("notes", "too_long")]


@pytest.mark.parametrize(
    ("status", "cancelable"),
    [("ordered", True), ("scheduling", True), ("scheduled", False), ("completed", False),
     ("canceled", False)],
)  # fmt: skip
def test_cancel_only_before_scheduling(sandbox: Sandbox, status: str, cancelable: bool) -> None:
    """Only new_request, ordered and scheduling orders cancel; others are `not_cancelable`."""
    order_id = sandbox.create().json()["data"]["order_id"]
    sandbox.server.advance_status(order_id, status)
    response = sandbox.cancel(order_id)
    if cancelable:
        assert response.json()["data"]["order_status"] == "canceled"
    else:
        assert errors_of(response) == [("order_id", "not_cancelable")]
        assert sandbox.server.orders[0]["order_status"] == status


def test_cancel_of_another_keys_order_is_unrecognized(sandbox: Sandbox) -> None:
    """A key cannot cancel an order it did not create; the order stays as it was."""
    order_id = sandbox.create().json()["data"]["order_id"]
    assert errors_of(sandbox.cancel(order_id, key=OTHER_KEY)) == [("order_id", "unrecognized")]
    assert sandbox.server.orders[0]["order_status"] == "new_request"


def test_advance_status_rejects_unknown_orders_and_statuses(sandbox: Sandbox) -> None:
    """advance_status raises for an order that does not exist or a status PlanOmatic lacks."""
    order_id = sandbox.create().json()["data"]["order_id"]
    with pytest.raises(KeyError):
        sandbox.server.advance_status(order_id + 1, "ordered")
    with pytest.raises(ValueError, match="not a PlanOmatic order status"):
        sandbox.server.advance_status(order_id, "teleported")


# --- server lifecycle, concurrency, logs ------------------------------------------------------


def test_concurrent_creates_get_distinct_ids(sandbox: Sandbox) -> None:
    """Creates from many threads at once each get their own order_id, none lost."""
    statuses: list[int] = []

    def create_five() -> None:
        with httpx.Client(base_url=sandbox.server.url, trust_env=False, timeout=10) as client:
            statuses.extend(client.post(CREATE, json=order_body()).status_code for _ in range(5))

    threads = [threading.Thread(target=create_five) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 40
    ids = sorted(order["order_id"] for order in sandbox.server.orders)
    assert ids == list(range(100001, 100041))


def test_logs_one_line_per_request_without_secrets(sandbox: Sandbox) -> None:
    """Each request logs method, path, status and duration, never the api_key or access code."""
    with structlog.testing.capture_logs() as logs:
        sandbox.client.post(f"{CREATE}?api_key={KEY}", json=order_body())
        sandbox.cancel(100001)
    requests = [entry for entry in logs if entry["event"] == "sandbox.request"]
    assert [(e["method"], e["path"], e["status"]) for e in requests] == [
        ("POST", CREATE, 201),
        ("POST", CANCEL, 200),
    ]
    assert all(entry["duration_ms"] >= 0 for entry in requests)
    assert KEY not in repr(logs)
    assert ACCESS_CODE not in repr(logs)


def test_stopped_server_releases_its_port() -> None:
    """Leaving the context stops the server; stop() is safe to repeat."""
    with SandboxServer(make_config()) as server:
        url = server.url
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
            assert client.post(CREATE, json=order_body()).status_code == 201
    server.stop()
    with (
        httpx.Client(base_url=url, trust_env=False, timeout=2) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.post(CREATE, json=order_body())


def test_default_config_accepts_the_sandbox_key() -> None:
    """SandboxConfig.default() serves key sandbox-key billing investment_entity_1 and _2."""
    server = SandboxServer(SandboxConfig.default())
    with server, httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        for entity in ("investment_entity_1", "investment_entity_2"):
            body = order_body(api_key="sandbox-key", billing_entity_slug=entity)
            assert client.post(CREATE, json=body).status_code == 201
    assert server.url.startswith("http://127.0.0.1:")


# --- command line -----------------------------------------------------------------------------


def test_cli_help_shows_an_example() -> None:
    """`propready sandbox --help` documents the command with a runnable example."""
    result = CliRunner().invoke(sandbox_command, ["--help"])
    assert result.exit_code == 0
    lines = [line.strip() for line in result.output.splitlines()]
    assert any(line.startswith("Example: propready sandbox --port") for line in lines)
    assert "--duplicate-hours" in result.output


def _wait_for_url(url_file: Path, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if url_file.exists():
            return url_file.read_text(encoding="utf-8")
        if process.poll() is not None:
            pytest.fail(f"sandbox exited early with {process.returncode}")
        time.sleep(0.05)
    pytest.fail("sandbox never wrote its url file")


def test_cli_serves_until_sigterm_then_exits_zero(tmp_path: Path) -> None:
    """The command announces its URL, serves orders, and exits 0 on SIGTERM without leaking keys."""
    url_file = tmp_path / "sandbox.url"
    command = [
        sys.executable,
        "-c",
        "from propready.cli.sandbox_command import sandbox_command; sandbox_command()",
        "--port", "0", "--url-file", str(url_file), "--api-key", "cli-secret-key",
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            url = _wait_for_url(url_file, process)
            with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
                response = client.post(CREATE, json=order_body(api_key="cli-secret-key"))
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr
    assert response.status_code == 201
    assert url.startswith("http://127.0.0.1:")
    assert f"sandbox listening on {url}" in stdout.splitlines()
    assert "/api/v3/orders/create" in stdout  # the request's log line
    assert "cli-secret-key" not in stdout + stderr
    assert ACCESS_CODE not in stdout + stderr
