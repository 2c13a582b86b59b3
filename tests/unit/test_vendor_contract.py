"""The vendor contract as a pure function (the sandbox's HTTP tests cover it field by field)."""

from __future__ import annotations

from typing import Any

from propready.adapters.catalog_file import load_catalog
from propready.core.vendor_contract import validate_create

CATALOG = load_catalog()


def body(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "external_property_id": "RM-101",
        "billing_entity_slug": "investment_entity_1",
        "services": [{"slug": "exterior_photos", "quantity": 3}],
        "property": {
            "location": {
                "street": "1 Main",
                "city": "Denver",
                "state": "CO",
                "postal_code": "80202",
            }
        },
        "property_access": {
            "vacant": True,
            "method_of_access": "rently",
            "onsite_contact_name": "Pat",
            "onsite_contact_phone": "303 555 0100",
        },
    }
    data.update(changes)
    return data


def pairs(found: list[Any]) -> list[tuple[str, str]]:
    return [(p.attr, p.message) for p in found]


def test_linked_entities_are_checked_only_when_known() -> None:
    """A slug outside the linked entities is unauthorized; without the list it is not judged."""
    assert validate_create(body(), CATALOG) == []
    assert pairs(validate_create(body(), CATALOG, linked_entities={"other"})) == [
        ("billing_entity_slug", "unauthorized")
    ]


def test_coordinates_must_be_numbers_in_range() -> None:
    """latitude and longitude are optional; when sent, numbers (or numeric text) in range."""
    location = {**body()["property"]["location"], "latitude": "39.74", "longitude": -104.99}
    assert validate_create(body(property={"location": location}), CATALOG) == []
    location.update(latitude="north", longitude=200)
    assert pairs(validate_create(body(property={"location": location}), CATALOG)) == [
        ("property.location.latitude", "unrecognized"),
        ("property.location.longitude", "unrecognized"),
    ]


def test_hints_never_quote_access_details() -> None:
    """Hints for access codes and locations say what is wrong, never the value."""
    access = {**body()["property_access"], "method_of_access": "keypad", "access_code": "4" * 256}
    (problem,) = validate_create(body(property_access=access), CATALOG)
    assert (problem.attr, problem.message) == ("property_access.access_code", "too_long")
    assert "4444" not in str(problem)


def test_non_string_metadata_keys_do_not_crash() -> None:
    """A body decoded from odd JSON-like input (a number as key) is reported, not raised."""
    assert pairs(validate_create(body(metadata={1: "x"}), CATALOG)) == [("metadata.1", "invalid")]
