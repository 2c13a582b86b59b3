"""What a rule set would order for a property right now, and how two rule sets differ (pure).

A property's outcome is the first trigger (in rule-file order) that is true now and whose
decision orders something: the daemon would place that order, and the duplicate window would
block a second one for the same home. Edges are not considered (simulate asks "what would these
rules order for the homes as they are", not "what fires on the next poll").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

from propready.core.expressions import EvaluationScope
from propready.core.model import Decision, PropertySnapshot, ServiceLine
from propready.core.rules import RuleSet, decide, trigger_values


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
    scope = EvaluationScope(snapshot.facts, now, zone)
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
