"""Plain values that flow through the pure core: property snapshots, readiness events, decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["rising_edge", "first_sight", "backfill"]

# Source columns that carry secrets: kept for the order payload, never stored as facts or audited.
SECRET_FACTS = frozenset({"access_code"})


@dataclass(frozen=True, slots=True)
class PropertySnapshot:
    """One row of the source query, typed: what the PM database says about a home right now."""

    external_property_id: str
    facts: Mapping[str, Any]

    def public_facts(self) -> dict[str, Any]:
        """The facts without secrets: what may be stored, audited and shown."""
        return {k: v for k, v in self.facts.items() if k not in SECRET_FACTS}


@dataclass(frozen=True, slots=True)
class Edge:
    """A trigger condition became true for a property (the n-th time: `edge_seq`)."""

    trigger_name: str
    edge_seq: int
    kind: EventKind


@dataclass(frozen=True, slots=True)
class ServiceLine:
    slug: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ConditionTrace:
    """One evaluated condition, with its outcome or the error that made it false.

    `kind`: "trigger" (rule_id holds the trigger name), "when", "quantity", or "skipped" /
    "disabled" for rules that answer the trigger but were not evaluated. `facts`: the values of
    the property fields the expression read (secrets masked).
    """

    rule_id: str
    expression: str
    result: bool
    error: str | None = None
    kind: str = "when"
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """Which rule (if any) answers a readiness event, what to order, and why."""

    rule_id: str | None
    services: tuple[ServiceLine, ...] = ()
    billing_entity_slug: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    order_notes: str | None = None
    property_access: Mapping[str, Any] = field(default_factory=dict)
    duplicate_window_hours: float | None = None
    requires_approval: bool = False
    allow_unpriced: bool = False  # a service without a catalog price does not hold the order
    trace: tuple[ConditionTrace, ...] = ()
    reason: str = ""
    considered: tuple[str, ...] = ()  # ids of the rules answering the trigger, in trial order
    rules_version: str = ""
    hit_policy: str = "first"

    @property
    def orders_something(self) -> bool:
        return self.rule_id is not None and bool(self.services)
