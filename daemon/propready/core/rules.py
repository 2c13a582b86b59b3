"""Rule sets and decisions: which rule answers a readiness event and what it orders (pure).

Hit policy `first` (the default): rules answering the trigger are tried by descending priority,
then file order; the first whose `when` holds wins. Policy `collect`: every matching rule
contributes services; a slug ordered by several rules is ordered once, with the largest quantity;
the highest-priority matching rule supplies everything else (billing entity, metadata, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from propready.core.budgets import Budget
from propready.core.expressions import EvaluationScope, Expression, SourceLocation
from propready.core.facts import facts_for_storage
from propready.core.model import (
    ConditionTrace,
    Decision,
    ServiceLine,
)
from propready.core.triggers import TriggerAnalysis, analyse_triggers

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
    allow_unpriced: bool = False
    on_vendor_cancel: Literal["reorder", "notify"] = "notify"  # PlanOmatic canceled the order


@dataclass(frozen=True, slots=True)
class RuleTest:
    """A test case from a rule file: given this property and trigger, expect this outcome.

    `expect_rule` / `expect_services` are checked when given; `expect_no_order` says nothing may
    be ordered (no rule matches, or the trigger is not even true for these facts).
    """

    name: str
    trigger: str
    facts: Mapping[str, Any]
    location: SourceLocation
    now: datetime | None = None
    expect_rule: str | None = None
    expect_services: tuple[ServiceLine, ...] | None = None
    expect_no_order: bool = False


@dataclass(frozen=True, slots=True)
class RuleSet:
    triggers: Mapping[str, Expression]
    rules: tuple[Rule, ...]
    version: str  # content hash of the rule files
    hit_policy: HitPolicy = "first"
    tests: tuple[RuleTest, ...] = ()
    budgets: tuple[Budget, ...] = ()  # from the files' `budgets:` sections (core/budgets.py)
    # What the poller must know about the triggers to skip work safely; part of the loaded set,
    # computed once when the set is built.
    analysis: TriggerAnalysis = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rule_expressions = [
            expression.source
            for rule in self.rules
            for expression in (rule.when, *(s.quantity for s in rule.services))
            if isinstance(expression, Expression)
        ]
        triggers = {name: e.source for name, e in self.triggers.items()}
        object.__setattr__(self, "analysis", analyse_triggers(triggers, rule_expressions))

    def rules_for(self, trigger_name: str) -> list[Rule]:
        answering = [r for r in self.rules if r.enabled and trigger_name in r.triggered_by]
        # Stable sort: equal priorities keep file order.
        return sorted(answering, key=lambda r: -r.priority)


def trigger_values(
    ruleset: RuleSet, scope: EvaluationScope, names: Iterable[str] | None = None
) -> tuple[dict[str, bool], dict[str, str]]:
    """The triggers' current values for one property (all, or `names`), and the errors that
    made some false."""
    values: dict[str, bool] = {}
    errors: dict[str, str] = {}
    for name in ruleset.triggers if names is None else names:
        value, error = scope.is_true(ruleset.triggers[name])
        values[name] = value
        if error is not None:
            errors[name] = error
    return values, errors


def decide(ruleset: RuleSet, trigger_name: str, scope: EvaluationScope) -> Decision:
    """Apply the rule set to one readiness event, tracing every condition and why a rule won.

    The trace starts with the trigger's own condition, then lists each rule answering the trigger
    in trial order: evaluated ("when", "quantity"), not evaluated because an earlier rule won
    ("skipped"), or switched off ("disabled").
    """
    trace: list[ConditionTrace] = []
    trigger = ruleset.triggers.get(trigger_name)
    if trigger is not None:
        trace.append(_traced(trigger_name, trigger, scope, "trigger"))
    for rule in ruleset.rules:
        if not rule.enabled and trigger_name in rule.triggered_by:
            trace.append(ConditionTrace(rule.id, _when_text(rule), False, kind="disabled"))
    candidates = ruleset.rules_for(trigger_name)
    common: dict[str, Any] = {
        "considered": tuple(r.id for r in candidates),
        "rules_version": ruleset.version,
        "hit_policy": ruleset.hit_policy,
    }
    if not candidates:
        return Decision(
            None,
            trace=tuple(trace),
            reason=f"no enabled rule answers trigger {trigger_name!r}",
            **common,
        )
    matched: list[tuple[Rule, tuple[ServiceLine, ...]]] = []
    failed: list[Rule] = []
    for rule in candidates:
        if matched and ruleset.hit_policy == "first":
            trace.append(ConditionTrace(rule.id, _when_text(rule), False, kind="skipped"))
            continue
        if rule.when is None:
            trace.append(ConditionTrace(rule.id, "true", True))
        else:
            trace.append(_traced(rule.id, rule.when, scope, "when"))
        if not trace[-1].result:
            failed.append(rule)
            continue
        services, service_errors = _services_of(rule, scope)
        trace.extend(service_errors)
        if service_errors:
            failed.append(rule)
            continue
        matched.append((rule, services))
    if not matched:
        return Decision(
            None,
            trace=tuple(trace),
            reason="no rule's condition holds (tried " + _ids(candidates) + ")",
            **common,
        )
    winner, services = matched[0]
    if ruleset.hit_policy == "collect":
        services = _merge_services([lines for _, lines in matched])
    return Decision(
        rule_id=winner.id,
        services=services,
        billing_entity_slug=winner.billing_entity_slug,
        metadata=dict(winner.metadata),
        order_notes=winner.order_notes,
        property_access=dict(winner.property_access),
        duplicate_window_hours=winner.duplicate_window_hours,
        requires_approval=winner.requires_approval,
        allow_unpriced=winner.allow_unpriced,
        trace=tuple(trace),
        reason=_why(ruleset.hit_policy, winner, [r for r, _ in matched], failed),
        **common,
    )


def _why(policy: HitPolicy, winner: Rule, matched: list[Rule], failed: list[Rule]) -> str:
    if policy == "collect" and len(matched) > 1:
        return (
            f"hit policy collect: services merged from rules {_ids(matched)} (a service ordered "
            f"by several rules takes the largest quantity); rule {winner.id!r} has the highest "
            "priority and supplies billing, metadata, notes and access"
        )
    reason = f"rule {winner.id!r} (priority {winner.priority}) is the first, by priority, whose"
    reason += " condition holds"
    earlier = [r for r in failed if r.priority >= winner.priority]
    if earlier:
        reason += f"; tried before it and did not hold: {_ids(earlier)}"
    return reason


def _ids(rules: list[Rule]) -> str:
    return ", ".join(f"{r.id!r}" for r in rules)


def _when_text(rule: Rule) -> str:
    return rule.when.source if rule.when is not None else "true"


def _traced(name: str, expression: Expression, scope: EvaluationScope, kind: str) -> ConditionTrace:
    holds, error = scope.is_true(expression)
    return ConditionTrace(
        name, expression.source, holds, error, kind=kind, facts=_shown(scope, expression)
    )


def _shown(scope: EvaluationScope, expression: Expression) -> dict[str, Any]:
    """The facts read, JSON-safe, with secrets masked: traces go to the audit log."""
    read = scope.facts_read(expression)
    secrets = scope.secrets
    safe = facts_for_storage({k: v for k, v in read.items() if k not in secrets})
    return {**safe, **{k: "***" for k in read if k in secrets}}


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
            errors.append(
                ConditionTrace(
                    rule.id,
                    spec.quantity.source,
                    False,
                    error,
                    kind="quantity",
                    facts=_shown(scope, spec.quantity),
                )
            )
            continue
        lines.append(ServiceLine(spec.slug, value))
    return tuple(lines), errors


def _merge_services(groups: list[tuple[ServiceLine, ...]]) -> tuple[ServiceLine, ...]:
    merged: dict[str, int] = {}
    for lines in groups:
        for line in lines:
            merged[line.slug] = max(merged.get(line.slug, 0), line.quantity)
    return tuple(ServiceLine(slug, quantity) for slug, quantity in merged.items())
