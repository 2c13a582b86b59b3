"""Rule engine details: field references, decision traces, hit policies and rule-file tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import RuleFileError, load_rule_set, parse_rule_files
from propready.core.expressions import EvaluationScope, SourceLocation, compile_expression
from propready.core.model import Decision, PropertySnapshot
from propready.core.rule_tests import run_rule_tests
from propready.core.rules import RuleSet, decide

REPO = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()
NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
DENVER = ZoneInfo("America/Denver")

RULES = """\
triggers:
  ready: property.status == "Vacant Unrented Ready"
rules:
  - id: big
    triggered_by: [ready]
    when: property.bedrooms >= 4 && property.access_code != ""
    priority: 30
    services: [{slug: photos, quantity: 25}, {slug: zillow_3d_and_floor_plans, quantity: 1}]
  - id: any-home
    triggered_by: [ready]
    priority: 10
    services: [{slug: photos, quantity: 15}, {slug: exterior_photos, quantity: 3}]
  - id: last
    triggered_by: [ready]
    services: [{slug: exterior_photos, quantity: 5}]
  - id: off
    triggered_by: [ready]
    enabled: false
    services: [{slug: photos, quantity: 10}]
"""


def _fields(source: str) -> tuple[str, ...]:
    return compile_expression(source, SourceLocation("r.yaml", 1)).fields


def _decide(rules: RuleSet, **facts: object) -> Decision:
    snapshot = PropertySnapshot("P1", {"status": "Vacant Unrented Ready", **facts})
    return decide(rules, "ready", EvaluationScope(snapshot.facts, NOW, DENVER))


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ('property.a == "property.b"', ("a",)),
        ("property['c'] > 1 && has(property.d)", ("c", "d")),
        ("property.tags.exists(t, t == property.e) // property.f", ("tags", "e")),
        ("r'property.g' == property . h", ("h",)),
        ('"""property.i""" == property.j', ("j",)),
    ],
)
def test_field_references_skip_strings_comments_and_bound_names(
    source: str, fields: tuple[str, ...]
) -> None:
    """Only real `property.X` reads count; text inside literals and comments does not."""
    assert _fields(source) == fields


def test_field_names_are_not_checked_without_the_source_columns() -> None:
    """Without known fields any field loads; with them an unknown one is refused."""
    text = RULES.replace("property.bedrooms", "property.beds")
    assert len(parse_rule_files([("r.yaml", text)], CATALOG).rules) == 4
    known = {"status", "bedrooms", "access_code"}
    with pytest.raises(RuleFileError) as caught:
        parse_rule_files([("r.yaml", text)], CATALOG, known)
    assert [str(p) for p in caught.value.problems] == [
        "r.yaml:6: rule 'big': when: unknown field property.beds (the source query does not "
        "return it; did you mean 'bedrooms'?)"
    ]


def test_trace_records_trigger_conditions_facts_winner_and_version() -> None:
    """The trace shows every rule considered, the facts read (secrets masked), and why one won."""
    rules = parse_rule_files([("r.yaml", RULES)], CATALOG)
    decision = _decide(rules, bedrooms=2, access_code="7391")
    assert decision.rule_id == "any-home"
    trace = decision.trace
    assert [(t.kind, t.rule_id, t.result) for t in trace] == [
        ("trigger", "ready", True),
        ("disabled", "off", False),
        ("when", "big", False),
        ("when", "any-home", True),
        ("skipped", "last", False),
    ]
    assert trace[0].facts == {"status": "Vacant Unrented Ready"}
    assert trace[2].facts == {"bedrooms": 2, "access_code": "***"}
    assert decision.considered == ("big", "any-home", "last")
    assert decision.rules_version == rules.version
    assert decision.reason == (
        "rule 'any-home' (priority 10) is the first, by priority, whose condition holds; "
        "tried before it and did not hold: 'big'"
    )


def test_collect_merges_services_taking_the_largest_quantity() -> None:
    """Under collect, every matching rule contributes; a repeated slug keeps its largest quantity."""
    rules = parse_rule_files([("r.yaml", "hit_policy: collect\n" + RULES)], CATALOG)
    decision = _decide(rules, bedrooms=5, access_code="1")
    assert decision.rule_id == "big"
    assert sorted((s.slug, s.quantity) for s in decision.services) == [
        ("exterior_photos", 5),
        ("photos", 25),
        ("zillow_3d_and_floor_plans", 1),
    ]
    assert "services merged from rules 'big', 'any-home', 'last'" in decision.reason


def test_shipped_rule_file_tests_pass() -> None:
    """The cases in rules/*.yaml pass, so the shipped examples stay true to their comments."""
    rules = load_rule_set(REPO / "rules", CATALOG)
    outcomes = run_rule_tests(rules, DENVER, NOW)
    assert len(outcomes) >= 5
    assert [o.test.name for o in outcomes if not o.passed] == []


def test_a_case_whose_trigger_is_false_expects_no_order() -> None:
    """A case is decided only if its trigger holds: an occupied home cannot order anything."""
    text = RULES + (
        "tests:\n  - name: occupied\n    trigger: ready\n    property: {status: Occupied}\n"
        "    expect: {rule: any-home}\n"
    )
    (outcome,) = run_rule_tests(parse_rule_files([("r.yaml", text)], CATALOG), DENVER, NOW)
    assert not outcome.passed
    assert outcome.differences == ("expected an order, got no order",)
    assert outcome.trigger_note == "trigger 'ready' is not true for these facts"
