"""Running the test cases written in rule files, and describing decisions for people (pure).

A case decides exactly as the daemon would for a readiness event: the trigger must hold for the
given facts (otherwise there is no event, so nothing is ordered), then the rules decide. Facts
the case leaves out are *absent*: a condition that reads one errors and is false, as in the
daemon; write `field: null` for a column that is NULL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from propready.core.catalog import Catalog
from propready.core.expressions import EvaluationScope
from propready.core.model import Decision, ServiceLine
from propready.core.rules import RuleSet, RuleTest, decide


@dataclass(frozen=True, slots=True)
class TestOutcome:
    test: RuleTest
    differences: tuple[str, ...]  # empty when the case passes
    decision: Decision | None  # None when the trigger did not hold
    trigger_note: str = ""  # why the trigger did not hold

    @property
    def passed(self) -> bool:
        return not self.differences


def run_rule_tests(
    ruleset: RuleSet, zone: tzinfo, default_now: datetime, catalog: Catalog | None = None
) -> list[TestOutcome]:
    return [run_rule_test(ruleset, test, zone, default_now, catalog) for test in ruleset.tests]


def run_rule_test(
    ruleset: RuleSet,
    test: RuleTest,
    zone: tzinfo,
    default_now: datetime,
    catalog: Catalog | None = None,
) -> TestOutcome:
    """Decide the case as the daemon would; with `catalog`, a computed quantity the catalog
    refuses fails the case even when it was expected (PlanOmatic would refuse the order)."""
    facts = dict(test.facts)
    scope = EvaluationScope(facts, test.now or default_now, zone)
    holds, error = scope.is_true(ruleset.triggers[test.trigger])
    if not holds:
        note = f"trigger {test.trigger!r} is not true for these facts" + (
            f" ({error})" if error else ""
        )
        return TestOutcome(test, _differences(test, None, ()), None, note)
    decision = decide(ruleset, test.trigger, scope)
    ordered = decision.rule_id if decision.orders_something else None
    services = decision.services if decision.orders_something else ()
    found = _differences(test, ordered, services) + _refused_by(catalog, services)
    return TestOutcome(test, found, decision)


def _refused_by(catalog: Catalog | None, services: tuple[ServiceLine, ...]) -> tuple[str, ...]:
    if catalog is None:
        return ()
    refused = []
    for line in services:
        entry = catalog.get(line.slug)
        if entry is not None and not entry.accepts_quantity(line.quantity):
            allowed = ", ".join(map(str, sorted(entry.quantities))) or "any positive whole number"
            refused.append(
                f"! {line.slug} x{line.quantity}: the catalog does not accept quantity "
                f"{line.quantity} (allowed: {allowed}); PlanOmatic would refuse the order"
            )
    return tuple(refused)


def _differences(
    test: RuleTest, rule_id: str | None, services: tuple[ServiceLine, ...]
) -> tuple[str, ...]:
    found: list[str] = []
    if test.expect_no_order:
        if rule_id is not None:
            found.append(
                f"expected no order, got rule {rule_id!r} ordering {services_text(services)}"
            )
        return tuple(found)
    if rule_id is None:
        found.append("expected an order, got no order")
    if test.expect_rule is not None and rule_id is not None and test.expect_rule != rule_id:
        found.append(f"rule: expected {test.expect_rule!r}, got {rule_id!r}")
    if test.expect_services is not None and rule_id is not None:
        expected = {(s.slug, s.quantity) for s in test.expect_services}
        actual = {(s.slug, s.quantity) for s in services}
        for slug, quantity in sorted(expected - actual):
            found.append(f"- {slug} x{quantity}  (expected, not ordered)")
        for slug, quantity in sorted(actual - expected):
            found.append(f"+ {slug} x{quantity}  (ordered, not expected)")
    return tuple(found)


def services_text(services: tuple[ServiceLine, ...] | list[ServiceLine]) -> str:
    return ", ".join(f"{s.slug} x{s.quantity}" for s in services) or "nothing"


def expected_text(test: RuleTest) -> str:
    if test.expect_no_order:
        return "no order"
    parts = []
    if test.expect_rule is not None:
        parts.append(f"rule {test.expect_rule!r}")
    if test.expect_services is not None:
        parts.append(services_text(test.expect_services))
    return "; ".join(parts)


def actual_text(outcome: TestOutcome) -> str:
    decision = outcome.decision
    if decision is None:
        return f"no order: {outcome.trigger_note}"
    if not decision.orders_something:
        return f"no order: {decision.reason}"
    return f"rule {decision.rule_id!r}; {services_text(decision.services)}"


def trace_lines(decision: Decision) -> list[str]:
    """The decision trace, one line per condition: what was read and what it gave."""
    lines = [f"why: {decision.reason}", f"rules version {decision.rules_version}"]
    for entry in decision.trace:
        result: Any = "true" if entry.result else "false"
        if entry.kind in ("skipped", "disabled"):
            result = (
                "not evaluated (an earlier rule won)" if entry.kind == "skipped" else "disabled"
            )
        elif entry.error:
            result = f"false ({entry.error})"
        facts = ", ".join(f"{k}={v!r}" for k, v in entry.facts.items())
        who = f"trigger {entry.rule_id}" if entry.kind == "trigger" else f"rule {entry.rule_id}"
        what = f" [{entry.kind}]" if entry.kind == "quantity" else ""
        lines.append(
            f"{who}{what}: {entry.expression.strip()} -> {result}"
            + (f"  {{{facts}}}" if facts else "")
        )
    return lines
