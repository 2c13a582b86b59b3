"""From a decision to an order request PlanOmatic accepts (pure): payload, ids, the window.

The payload follows planomatic-api.md section 1.1 and is built from the source columns of
`core.payload_columns`. It is then checked by the vendor contract (`core.vendor_contract`, the
same validator the sandbox answers with), so a request PlanOmatic would refuse is never planned:
the operator sees each problem, in the vendor's words and with the source column to fix, in the
audit log, `propready check` and `propready simulate`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from propready.core.catalog import Catalog
from propready.core.model import Decision, Edge, PropertySnapshot
from propready.core.payload_columns import COLUMNS_BY_PATH, PAYLOAD_COLUMNS, PayloadColumn
from propready.core.pricing import estimate_price
from propready.core.vendor_contract import (
    ACCESS_METHODS,
    NO_ACCESS,
    PROPERTY_TYPES,
    US_STATES,
    ContractProblem,
    shown,
    validate_create,
)

__all__ = [
    "ACCESS_METHODS",
    "US_STATES",
    "OrderPlan",
    "PlanProblem",
    "external_order_id",
    "plan_order",
    "window_end",
]

_TRUE = frozenset({"1", "t", "true", "y", "yes", "vacant"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "occupied"})


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
    """The decision cannot become a valid order request.

    `errors`: each problem in the vendor's words (attr, message) with a hint naming the source
    column; `problems`: the same as one line each, for the audit log and people.
    """

    def __init__(self, problems: list[str], errors: tuple[ContractProblem, ...] = ()) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.errors = errors or tuple(ContractProblem("order", p) for p in problems)


def external_order_id(property_id: str, edge: Edge, rule_id: str, attempt: int = 0) -> str:
    """Deterministic, so a re-run of the same decision can never mint a second id.

    `attempt` counts the orders already created for this readiness (a re-plan after a rejection,
    a cancel or a reorder): each gets its own id, and the first keeps the id it always had.
    """
    key = f"{property_id}\x1f{edge.trigger_name}\x1f{edge.edge_seq}\x1f{rule_id}"
    if attempt:
        key += f"\x1f{attempt}"
    return f"pr-{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def plan_order(
    snapshot: PropertySnapshot,
    edge: Edge,
    decision: Decision,
    catalog: Catalog,
    default_window_hours: float,
    *,
    attempt: int = 0,
) -> OrderPlan:
    """The order request for a decision that orders something; PlanProblem if invalid.

    `attempt`: orders already created for this readiness (see external_order_id).
    """
    assert decision.rule_id is not None
    order_id = external_order_id(snapshot.external_property_id, edge, decision.rule_id, attempt)
    payload, reading_problems = build_payload(snapshot, decision, order_id)
    problems = reading_problems + [
        _with_column_hint(problem, snapshot.facts, decision)
        for problem in validate_create(payload, catalog)
        if problem.attr not in {p.attr for p in reading_problems}
    ]
    if problems:
        raise PlanProblem([str(p) for p in problems], tuple(problems))
    window = (
        decision.duplicate_window_hours
        if decision.duplicate_window_hours is not None
        else default_window_hours
    )
    price = estimate_price(decision.services, catalog)
    return OrderPlan(
        order_id,
        snapshot.external_property_id,
        str(payload["billing_entity_slug"]),
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


def build_payload(
    snapshot: PropertySnapshot, decision: Decision, order_id: str
) -> tuple[dict[str, Any], list[ContractProblem]]:
    """The create body (without api_key) from the row and the decision, and the values that
    could not be read at all (a vacancy that is not yes or no)."""
    facts = snapshot.facts
    problems: list[ContractProblem] = []
    location: dict[str, Any] = {}
    block: dict[str, Any] = {"location": location}
    access: dict[str, Any] = {}
    for column in PAYLOAD_COLUMNS:
        if column.section == "location":
            value = _location_value(column.name, facts.get(column.name))
            if value is not None:
                location[column.name] = value
        elif column.section == "property":
            value = _property_value(column.name, facts.get(column.name))
            if value is not None:
                block[column.name] = value
        elif column.section == "access":
            raw = facts.get(column.name)
            if raw is not None and (not isinstance(raw, str) or raw.strip()):
                access[column.name] = raw
    access.update(decision.property_access)  # the rule's overrides win
    _read_access(access, problems)
    payload: dict[str, Any] = {
        "external_property_id": snapshot.external_property_id,
        "external_order_id": order_id,
        "billing_entity_slug": decision.billing_entity_slug
        or _text(facts.get("billing_entity_slug"))
        or None,
        "services": [{"slug": s.slug, "quantity": s.quantity} for s in decision.services],
        "property": block,
        "property_access": access,
    }
    if payload["billing_entity_slug"] is None:
        del payload["billing_entity_slug"]
    if decision.metadata:
        payload["metadata"] = dict(decision.metadata)
    if decision.order_notes:
        payload["order_notes"] = decision.order_notes
    return payload, problems


def _location_value(name: str, value: Any) -> str | None:
    if name == "postal_code" and isinstance(value, int) and not isinstance(value, bool):
        # A ZIP code kept in a number column has lost its leading zeros (02134 became 2134).
        return f"{value:05d}" if 0 <= value < 100_000 else str(value)
    text = _text(value)
    if not text:
        return None
    return text.upper() if name == "state" else text


def _property_value(name: str, value: Any) -> Any:
    if name == "property_type":
        text = _text(value)
        return text if text in PROPERTY_TYPES else None  # optional: an unknown kind is left out
    if isinstance(value, Decimal):
        value = int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _read_access(access: dict[str, Any], problems: list[ContractProblem]) -> None:
    """Normalise the access block in place: vacancy as a boolean, method and dates as text."""
    vacant = _yes_no(access.get("vacant", True))
    if vacant is None:
        problems.append(
            ContractProblem(
                "property_access.vacant",
                "invalid",
                f"column vacant: {shown(access.get('vacant'))} is not a yes/no value",
            )
        )
        vacant = True
    access["vacant"] = vacant
    if not vacant:
        access["method_of_access"] = NO_ACCESS  # PlanOmatic's rule for occupied homes
    for key, value in list(access.items()):
        if key == "vacant":
            continue
        if key == "method_of_access":
            value = _text(value).lower().replace(" ", "_").replace("-", "_")
        elif isinstance(value, datetime):
            value = value.date().isoformat()
        elif isinstance(value, date):
            value = value.isoformat()
        access[key] = _text(value)


def _yes_no(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal) and value in (0, 1):
        return bool(value)
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _with_column_hint(
    problem: ContractProblem, facts: Mapping[str, Any], decision: Decision
) -> ContractProblem:
    """Name the source column behind a missing or empty field: that is what the operator fixes."""
    column = COLUMNS_BY_PATH.get(problem.attr)
    if column is None or problem.message not in ("missing", "empty"):
        return problem
    where = _where(column, facts, decision)
    hint = f"{problem.hint}; {where}" if problem.hint else where
    return ContractProblem(problem.attr, problem.message, hint)


def _where(column: PayloadColumn, facts: Mapping[str, Any], decision: Decision) -> str:
    if column.name == "billing_entity_slug":
        return "neither the rule nor the source row sets it"
    if column.name in decision.property_access:
        return f"the rule sets property_access.{column.name} empty"
    if column.name not in facts:
        return f"the source query returns no {column.name} column"
    return f"column {column.name} is empty for this home"


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()
