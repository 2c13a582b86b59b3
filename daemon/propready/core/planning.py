"""From a decision to an order request PlanOmatic accepts (pure): payload, ids, the window.

The payload follows planomatic-api.md section 1.1. Problems PlanOmatic would reject with a 400
(a missing street, an unknown state, a lockbox without its code) are found here first, so the
operator sees them in the audit log instead of as a vendor rejection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from propready.core.catalog import Catalog
from propready.core.model import Decision, Edge, PropertySnapshot
from propready.core.pricing import estimate_price

US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ "
    "NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY".split()
)
ACCESS_METHODS = frozenset({"lockbox_code", "keypad", "rently", "no_access_needed"})
PROPERTY_TYPES = frozenset(
    {"single_family", "condo_townhouse", "duplex_townhouse", "commercial", "land"}
)
_LOCATION_FIELDS = ("street", "street2", "city", "state", "postal_code", "latitude", "longitude")
_NUMERIC_FIELDS = ("bedrooms", "bathrooms", "price", "square_footage")
_ACCESS_FIELDS = (
    "vacant",
    "method_of_access",
    "access_code",
    "lockbox_location",
    "onsite_contact_name",
    "onsite_contact_phone",
    "onsite_contact_email",
    "preferred_date",
)


@dataclass(frozen=True, slots=True)
class OrderPlan:
    external_order_id: str
    external_property_id: str
    billing_entity_slug: str
    payload: Mapping[str, Any]  # the create body without api_key
    window_hours: float
    requires_approval: bool
    # The catalog's estimate (pricing.estimate_price): cents of the priced lines, whether it
    # rests on example prices, the services without a price, and whether the rule accepts that.
    estimated_price_cents: int | None = None
    price_estimated: bool = False
    unpriced_services: tuple[str, ...] = ()
    allow_unpriced: bool = False


class PlanProblem(ValueError):
    """The decision cannot become a valid order request; `problems` lists each field and why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def external_order_id(property_id: str, edge: Edge, rule_id: str) -> str:
    """Deterministic, so a re-run of the same decision can never mint a second id."""
    digest = hashlib.sha256(
        f"{property_id}\x1f{edge.trigger_name}\x1f{edge.edge_seq}\x1f{rule_id}".encode()
    )
    return f"pr-{digest.hexdigest()[:32]}"


def plan_order(
    snapshot: PropertySnapshot,
    edge: Edge,
    decision: Decision,
    catalog: Catalog,
    default_window_hours: float,
) -> OrderPlan:
    """The order request for a decision that orders something; PlanProblem if invalid."""
    assert decision.rule_id is not None
    facts = snapshot.facts
    problems: list[str] = []
    entity = decision.billing_entity_slug or _text(facts.get("billing_entity_slug"))
    if not entity:
        problems.append("billing_entity_slug: neither the rule nor the source row sets it")
    location = {k: _text(facts.get(k)) for k in _LOCATION_FIELDS if _text(facts.get(k))}
    for required in ("street", "city", "postal_code"):
        if required not in location:
            problems.append(f"property.location.{required}: missing in the source row")
    state = location.get("state", "").upper()
    if state not in US_STATES:
        problems.append(f"property.location.state: {state or 'missing'!s} is not a US state")
    location["state"] = state
    access = {k: facts.get(k) for k in _ACCESS_FIELDS if facts.get(k) not in (None, "")}
    access.update(decision.property_access)
    access = _normalise_access(access, problems)
    services = []
    for line in decision.services:
        entry = catalog.get(line.slug)
        if entry is None:
            problems.append(f"services: {line.slug!r} is not in the service catalog")
        elif not entry.accepts_quantity(line.quantity):
            problems.append(f"services: {line.slug} does not accept quantity {line.quantity}")
        services.append({"slug": line.slug, "quantity": line.quantity})
    if problems:
        raise PlanProblem(problems)
    order_id = external_order_id(snapshot.external_property_id, edge, decision.rule_id)
    payload: dict[str, Any] = {
        "external_property_id": snapshot.external_property_id,
        "external_order_id": order_id,
        "billing_entity_slug": entity,
        "services": services,
        "property": _property_block(facts, location),
        "property_access": access,
    }
    if decision.metadata:
        payload["metadata"] = dict(decision.metadata)
    if decision.order_notes:
        payload["order_notes"] = decision.order_notes
    window = (
        decision.duplicate_window_hours
        if decision.duplicate_window_hours is not None
        else default_window_hours
    )
    price = estimate_price(decision.services, catalog)
    return OrderPlan(
        order_id,
        snapshot.external_property_id,
        entity,
        payload,
        window,
        decision.requires_approval,
        estimated_price_cents=price.cents,
        price_estimated=price.estimated,
        unpriced_services=price.unpriced,
        allow_unpriced=decision.allow_unpriced,
    )


def window_end(created_at: datetime, window_hours: float) -> datetime:
    return created_at + timedelta(hours=window_hours)


def _property_block(facts: Mapping[str, Any], location: dict[str, str]) -> dict[str, Any]:
    block: dict[str, Any] = {"location": location}
    property_type = _text(facts.get("property_type"))
    if property_type in PROPERTY_TYPES:
        block["property_type"] = property_type
    for name in _NUMERIC_FIELDS:
        value = facts.get(name)
        if isinstance(value, Decimal):
            value = int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            block[name] = value
    return block


def _normalise_access(access: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    vacant = access.get("vacant")
    access["vacant"] = bool(vacant) if vacant is not None else True
    if not access["vacant"]:
        access["method_of_access"] = "no_access_needed"  # PlanOmatic's rule for occupied homes
    method = access.get("method_of_access")
    if method not in ACCESS_METHODS:
        problems.append(f"property_access.method_of_access: {method!r} is not a known method")
    if method in ("lockbox_code", "keypad") and not access.get("access_code"):
        problems.append(f"property_access.access_code: required for {method}")
    if method == "lockbox_code" and not access.get("lockbox_location"):
        problems.append("property_access.lockbox_location: required for lockbox_code")
    for required in ("onsite_contact_name", "onsite_contact_phone"):
        if not access.get(required):
            problems.append(f"property_access.{required}: missing in the source row")
    return {k: (str(v) if k != "vacant" else v) for k, v in access.items()}


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()
