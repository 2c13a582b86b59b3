"""What a rule set would order for a property right now, and how two rule sets differ (pure).

A property's outcome is the first trigger (in rule-file order) that is true now and whose
decision orders something: the daemon would place that order, and the duplicate window would
block a second one for the same home. Edges are not considered (simulate asks "what would these
rules order for the homes as they are", not "what fires on the next poll").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from propready.core.expressions import EvaluationScope
from propready.core.model import Decision, PropertySnapshot, ServiceLine
from propready.core.orders import HOLDS_WINDOW, OrderState
from propready.core.rules import RuleSet, decide, trigger_values
from propready.core.triggers import TriggerMemory


@dataclass(frozen=True, slots=True)
class Outcome:
    property_id: str
    trigger: str | None
    decision: Decision | None
    reason: str

    @property
    def rule_id(self) -> str | None:
        return self.decision.rule_id if self.decision is not None and self.orders else None

    @property
    def services(self) -> tuple[ServiceLine, ...]:
        return self.decision.services if self.decision is not None and self.orders else ()

    @property
    def orders(self) -> bool:
        return self.decision is not None and self.decision.orders_something


def simulate(ruleset: RuleSet, snapshot: PropertySnapshot, now: datetime, zone: tzinfo) -> Outcome:
    scope = EvaluationScope(snapshot.facts, now, zone, secrets=snapshot.secrets)
    values, _errors = trigger_values(ruleset, scope)
    fallback: Outcome | None = None
    for name, holds in values.items():
        if not holds:
            continue
        decision = decide(ruleset, name, scope)
        outcome = Outcome(snapshot.external_property_id, name, decision, decision.reason)
        if decision.orders_something:
            return outcome
        fallback = fallback or outcome
    if fallback is not None:
        return fallback
    return Outcome(snapshot.external_property_id, None, None, "no trigger is true now")


def service_keys(services: tuple[ServiceLine, ...]) -> set[str]:
    return {f"{s.slug} x{s.quantity}" for s in services}


def difference(live: Outcome, candidate: Outcome) -> tuple[list[str], list[str]] | None:
    """(gained, lost) services when the candidate orders differently, else None."""
    gained = sorted(service_keys(candidate.services) - service_keys(live.services))
    lost = sorted(service_keys(live.services) - service_keys(candidate.services))
    if not gained and not lost and live.rule_id == candidate.rule_id:
        return None
    return gained, lost


@dataclass(frozen=True, slots=True)
class ExistingOrder:
    """An order already in the outbox for a home, with the readiness event it answered."""

    external_order_id: str
    state: str
    created_at: datetime
    window_end: datetime
    trigger_name: str | None = None
    edge_seq: int | None = None


# Orders still on their way: a new readiness would not get a second one.
OPEN_STATES = frozenset(
    {OrderState.PLANNED, OrderState.SENDING, OrderState.AWAITING_APPROVAL, OrderState.UNKNOWN}
)


@dataclass(frozen=True, slots=True)
class Standing:
    """Whether the daemon would place the order now: `kind` for counting, `text` for people.

    kind: would_order, already_ordered, open_order, in_window, first_sight or decided.
    """

    kind: str
    text: str


def standing(
    trigger: str,
    seen: bool,
    memory: TriggerMemory | None,
    orders: Sequence[ExistingOrder],
    now: datetime,
    first_sight: str,
) -> Standing:
    """Whether the daemon would order a home that the rules order now, given what it remembers.

    `seen`: the daemon has polled the home before; `memory`: its memory of `trigger` (None when
    it has none); `orders`: the home's orders, newest first.
    """
    if memory is not None and memory.is_true:
        for order in orders:
            if (order.trigger_name, order.edge_seq) == (trigger, memory.edge_count):
                text = (
                    f"already ordered for this readiness: {order.external_order_id} ({order.state})"
                )
                return Standing("already_ordered", text)
    for order in orders:
        if order.state in OPEN_STATES:
            return Standing("open_order", f"open order {order.external_order_id} ({order.state})")
    for order in orders:
        if (
            order.state in HOLDS_WINDOW
            and order.created_at < order.window_end
            and now < order.window_end
        ):
            return Standing(
                "in_window",
                f"inside the duplicate window of {order.external_order_id} ({order.state}) until "
                f"{order.window_end:%Y-%m-%d %H:%M} UTC",
            )
    # True when first seen and never risen since: remembered, not ordered (edge_count 0).
    at_first_sight = memory is not None and memory.is_true and memory.edge_count == 0
    if at_first_sight or (memory is None and first_sight != "fire"):
        where = "first sight" if not seen or at_first_sight else f"first sight of trigger {trigger}"
        return Standing(
            "first_sight",
            f"{where}: not ordered (first_sight = ignore; `propready backfill` orders it)",
        )
    if memory is not None and memory.is_true:
        return Standing(
            "decided", "this readiness was decided earlier without an order (`propready explain`)"
        )
    return Standing("would_order", "would order at the next poll")
