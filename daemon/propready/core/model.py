"""Plain values that flow through the pure core: property snapshots, readiness events, decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

EventKind = Literal["rising_edge", "first_sight", "backfill", "reorder"]

# Source columns that carry secrets: kept for the order payload, never stored as facts or audited.
SECRET_FACTS = frozenset({"access_code"})


@dataclass(frozen=True, slots=True)
class PropertySnapshot:
    """One row of the source query, typed: what the PM database says about a home right now."""

    external_property_id: str
    facts: Mapping[str, Any]
    # The columns whose values are secrets (`[source] secret_columns`): kept for the order
    # payload, never stored as facts, audited or shown.
    secrets: frozenset[str] = SECRET_FACTS

    def public_facts(self) -> dict[str, Any]:
        """The facts without secrets: what may be stored, audited and shown."""
        return {k: v for k, v in self.facts.items() if k not in self.secrets}


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


class EventState(StrEnum):
    """Where a readiness event stands (readiness_event.state)."""

    ORDERED = "ordered"  # an order exists for it
    # No order came of it for a reason a person can fix: planned again when the home's row, the
    # rules or the configuration change (design.md 8.1).
    OPEN = "open"
    DRY_RUN = "dry_run"  # decided in dry run: `backfill` offers it once live
    CLOSED = "closed"  # decided for good: no rule matched, a duplicate window, a budget skip


@dataclass(frozen=True, slots=True)
class OpenEvent:
    """A readiness event still waiting for an order, with what its last plan was made from."""

    id: int
    external_property_id: str
    edge: Edge
    plan_attempts: int
    plan_basis: str | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> OpenEvent:
        return cls(
            id=int(row["id"]),
            external_property_id=str(row["external_property_id"]),
            edge=Edge(str(row["trigger_name"]), int(row["edge_seq"]), row["kind"]),
            plan_attempts=int(row["plan_attempts"] or 0),
            plan_basis=row["plan_basis"],
        )


def plan_basis(row_hash: str, rules_version: str, config_fingerprint: str) -> str:
    """What a plan is made from: the home's row, the rules and the configuration."""
    return f"{row_hash}:{rules_version}:{config_fingerprint}"


def basis_parts(basis: str | None) -> tuple[str, str, str] | None:
    if basis is None or basis.count(":") != 2:
        return None
    row_hash, rules_version, config = basis.split(":")
    return row_hash, rules_version, config
