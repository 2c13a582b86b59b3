"""The planner: a payload built from the source columns, refused in the vendor's own words."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from propready.adapters.catalog_file import load_catalog
from propready.core.model import Decision, Edge, PropertySnapshot, ServiceLine
from propready.core.planning import PlanProblem, plan_order
from propready.core.vendor_contract import ContractProblem, validate_create

CATALOG = load_catalog()
EDGE = Edge("vacant_ready", 1, "rising_edge")
PHOTOS = (ServiceLine("photos", 25),)


def row(**changes: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "external_property_id": "RM-101",
        "street": "12 Main St",
        "city": "Denver",
        "state": "CO",
        "postal_code": "80202",
        "method_of_access": "lockbox_code",
        "access_code": "7391",
        "lockbox_location": "front door",
        "onsite_contact_name": "Pat Lee",
        "onsite_contact_phone": "+1 303-555-0100",
        "billing_entity_slug": "investment_entity_1",
    }
    facts.update(changes)
    return {k: v for k, v in facts.items() if v is not ...}


def plan(facts: dict[str, Any], services: tuple[ServiceLine, ...] = PHOTOS, **decision: Any):  # type: ignore[no-untyped-def]
    snapshot = PropertySnapshot(str(facts["external_property_id"]), facts)
    return plan_order(snapshot, EDGE, Decision("r1", services=services, **decision), CATALOG, 72)


def problems_of(facts: dict[str, Any], services: tuple[ServiceLine, ...] = PHOTOS, **decision: Any) -> list[tuple[str, str]]:  # fmt: skip
    with pytest.raises(PlanProblem) as caught:
        plan(facts, services, **decision)
    return [(p.attr, p.message) for p in caught.value.errors]


def test_a_complete_row_plans_a_body_the_contract_accepts() -> None:
    """A row with every required column becomes a body the shared validator finds no fault in."""
    planned = plan(row(bedrooms=Decimal(3), preferred_date=date(2026, 12, 3)))
    assert validate_create(planned.payload, CATALOG) == []
    assert planned.payload["property"]["bedrooms"] == 3
    assert planned.payload["property_access"]["preferred_date"] == "2026-12-03"
    assert planned.billing_entity_slug == "investment_entity_1"


def test_the_foreign_schema_story_names_every_missing_column() -> None:
    """A query without access columns is refused with each vendor field and the column behind it."""
    facts = row(method_of_access=..., lockbox_location=..., onsite_contact_name=..., onsite_contact_phone=...)  # fmt: skip
    with pytest.raises(PlanProblem) as caught:
        plan(facts)
    assert caught.value.problems == [
        "property_access.method_of_access: missing "
        "(the source query returns no method_of_access column)",
        "property_access.onsite_contact_name: missing "
        "(the source query returns no onsite_contact_name column)",
        "property_access.onsite_contact_phone: missing "
        "(the source query returns no onsite_contact_phone column)",
    ]


def test_problems_are_the_sandboxs_words() -> None:
    """PlanProblem lists exactly the (attr, message) pairs the vendor contract gives the sandbox."""
    facts = row(postal_code="8020", state="Colorado", onsite_contact_phone="555-0100")
    found = problems_of(facts, (ServiceLine("photos", 12),))
    assert found == [
        ("property.location.state", "unrecognized"),
        ("property.location.postal_code", "unrecognized"),
        ("services[0].quantity", "unrecognized"),
        ("property_access.onsite_contact_phone", "unrecognized"),
    ]


def test_an_occupied_home_cannot_order_interior_photos() -> None:
    """vacant no sends no_access_needed, which access_required services refuse; exterior is fine."""
    assert problems_of(row(vacant="no")) == [
        ("property_access.method_of_access", "access_required")
    ]
    exterior = plan(row(vacant=0), (ServiceLine("exterior_photos", 3),))
    assert exterior.payload["property_access"]["method_of_access"] == "no_access_needed"
    assert exterior.payload["property_access"]["vacant"] is False


@pytest.mark.parametrize(
    ("raw", "vacant"),
    [(True, True), (1, True), ("yes", True), ("Vacant", True), ("f", False), ("Occupied", False),
     (Decimal(0), False), (None, True)],
)  # fmt: skip
def test_vacancy_is_read_from_common_spellings(raw: Any, vacant: bool) -> None:
    """Booleans, 1/0, yes/no, t/f and vacant/occupied are read; a NULL means vacant."""
    services = (ServiceLine("exterior_photos", 3),)
    assert plan(row(vacant=raw), services).payload["property_access"]["vacant"] is vacant


def test_a_vacancy_that_is_not_yes_or_no_is_refused() -> None:
    """A vacant value like 'maybe' is refused rather than guessed."""
    assert problems_of(row(vacant="maybe")) == [("property_access.vacant", "invalid")]


def test_method_case_and_zip_numbers_are_forgiven() -> None:
    """`Lockbox Code` is read as lockbox_code, a lower-case state is capitalised, and a ZIP code
    that a number column stripped of its leading zero gets it back."""
    payload = plan(row(method_of_access="Lockbox Code", state="co", postal_code=2134)).payload
    assert payload["property_access"]["method_of_access"] == "lockbox_code"
    assert payload["property"]["location"]["state"] == "CO"
    assert payload["property"]["location"]["postal_code"] == "02134"


def test_rule_overrides_win_and_are_named_when_empty() -> None:
    """The rule's property_access wins over the row; an empty override is named as the rule's."""
    payload = plan(row(), property_access={"method_of_access": "rently"}).payload
    assert payload["property_access"]["method_of_access"] == "rently"
    with pytest.raises(PlanProblem) as caught:
        plan(row(), property_access={"onsite_contact_name": ""})
    assert caught.value.problems == [
        "property_access.onsite_contact_name: empty "
        "(the rule sets property_access.onsite_contact_name empty)"
    ]


def test_no_billing_entity_anywhere_is_missing() -> None:
    """Without a slug in the rule or the row, billing_entity_slug is missing, with the reason."""
    with pytest.raises(PlanProblem) as caught:
        plan(row(billing_entity_slug=...))
    assert caught.value.problems == [
        "billing_entity_slug: missing (neither the rule nor the source row sets it)"
    ]


def test_access_codes_never_appear_in_problems() -> None:
    """A problem about the access code says what is wrong without the code itself."""
    facts = row(access_code="9" * 300)
    with pytest.raises(PlanProblem) as caught:
        plan(facts)
    assert caught.value.errors == (
        ContractProblem("property_access.access_code", "too_long", "300 characters, at most 255"),
    )
    assert "999" not in str(caught.value)
