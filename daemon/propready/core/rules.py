"""Rule sets and decisions: which rule answers a readiness event and what it orders (pure).

Hit policy `first` (the default): rules answering the trigger are tried by descending priority,
then file order; the first whose `when` holds wins. Policy `collect`: every matching rule
contributes services; a slug ordered by several rules is ordered once, with the largest quantity;
the highest-priority matching rule supplies everything else (billing entity, metadata, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Literal

from propready.core.expressions import EvaluationScope, Expression, SourceLocation
from propready.core.model import ConditionTrace, Decision, PropertySnapshot, ServiceLine

HitPolicy = Literal["first", "collect"]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    slug: str
    quantity: int | Expression


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    triggered_by: tuple[str, ...]
    when: Expression | None
    services: tuple[ServiceSpec, ...]
    location: SourceLocation
    billing_entity_slug: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    order_notes: str | None = None
    property_access: Mapping[str, Any] = field(default_factory=dict)
    duplicate_window_hours: float | None = None
    priority: int = 0
    enabled: bool = True
    requires_approval: bool = False


@dataclass(frozen=True, slots=True)
class RuleSet:
    triggers: Mapping[str, Expression]
    rules: tuple[Rule, ...]
    version: str  # content hash of the rule files
    hit_policy: HitPolicy = "first"

    def rules_for(self, trigger_name: str) -> list[Rule]:
        answering = [r for r in self.rules if r.enabled and trigger_name in r.triggered_by]
        # Stable sort: equal priorities keep file order.
        return sorted(answering, key=lambda r: -r.priority)


def trigger_values(
    ruleset: RuleSet, scope: EvaluationScope
) -> tuple[dict[str, bool], dict[str, str]]:
    """Every trigger's current value for one property, and the errors that made some false."""
    values: dict[str, bool] = {}
    errors: dict[str, str] = {}
    for name, expression in ruleset.triggers.items():
        value, error = scope.is_true(expression)
        values[name] = value
        if error is not None:
            errors[name] = error
    return values, errors


def decide(
    ruleset: RuleSet,
    snapshot: PropertySnapshot,
    trigger_name: str,
    scope: EvaluationScope,
) -> Decision:
    """Apply the rule set to one readiness event."""
    candidates = ruleset.rules_for(trigger_name)
    if not candidates:
        return Decision(None, reason=f"no enabled rule answers trigger {trigger_name!r}")
    trace: list[ConditionTrace] = []
    matched: list[tuple[Rule, tuple[ServiceLine, ...]]] = []
    for rule in candidates:
        holds, error = (True, None) if rule.when is None else scope.is_true(rule.when)
        trace.append(
            ConditionTrace(rule.id, rule.when.source if rule.when else "true", holds, error)
        )
        if not holds:
            continue
        services, service_errors = _services_of(rule, scope)
        trace.extend(service_errors)
        if service_errors:
            continue
        matched.append((rule, services))
        if ruleset.hit_policy == "first":
            break
    if not matched:
        return Decision(None, trace=tuple(trace), reason="no rule's condition holds")
    winner, services = matched[0]
    if ruleset.hit_policy == "collect":
        services = _merge_services([lines for _, lines in matched])
    reason = f"rule {winner.id!r} (priority {winner.priority}) is the first whose condition holds"
    if ruleset.hit_policy == "collect" and len(matched) > 1:
        reason = "services collected from rules " + ", ".join(repr(r.id) for r, _ in matched)
    return Decision(
        rule_id=winner.id,
        services=services,
        billing_entity_slug=winner.billing_entity_slug,
        metadata=dict(winner.metadata),
        order_notes=winner.order_notes,
        property_access=dict(winner.property_access),
        duplicate_window_hours=winner.duplicate_window_hours,
        requires_approval=winner.requires_approval,
        trace=tuple(trace),
        reason=reason,
    )


def _services_of(
    rule: Rule, scope: EvaluationScope
) -> tuple[tuple[ServiceLine, ...], list[ConditionTrace]]:
    lines: list[ServiceLine] = []
    errors: list[ConditionTrace] = []
    for spec in rule.services:
        if isinstance(spec.quantity, int):
            lines.append(ServiceLine(spec.slug, spec.quantity))
            continue
        value, error = scope.evaluate(spec.quantity)
        if error is None and (isinstance(value, bool) or not isinstance(value, int)):
            error = f"quantity of {spec.slug} gave {value!r}, not an integer"
        if error is not None:
            errors.append(ConditionTrace(rule.id, spec.quantity.source, False, error))
            continue
        lines.append(ServiceLine(spec.slug, value))
    return tuple(lines), errors


def _merge_services(groups: list[tuple[ServiceLine, ...]]) -> tuple[ServiceLine, ...]:
    merged: dict[str, int] = {}
    for lines in groups:
        for line in lines:
            merged[line.slug] = max(merged.get(line.slug, 0), line.quantity)
    return tuple(ServiceLine(slug, quantity) for slug, quantity in merged.items())


def new_scope(snapshot: PropertySnapshot, now: datetime, zone: tzinfo) -> EvaluationScope:
    return EvaluationScope(snapshot.facts, now, zone)
