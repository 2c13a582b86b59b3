"""Rule files: the shipped examples load; each kind of mistake is refused with file, line, reason."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import RuleFileError, load_rule_set, parse_rule_files
from propready.core.expressions import EvaluationScope
from propready.core.model import PropertySnapshot
from propready.core.rules import RuleSet, decide, trigger_values

REPO = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()
DENVER = ZoneInfo("America/Denver")
NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)

GOOD = """\
triggers:
  ready: property.status == "Vacant Unrented Ready"
rules:
  - id: sfr
    triggered_by: [ready]
    when: property.bedrooms >= 3
    services:
      - {slug: photos, quantity: 25}
"""


def _load(text: str) -> RuleSet:
    return parse_rule_files([("r.yaml", text)], CATALOG)


def _problems(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        _load(text)
    return [str(p) for p in caught.value.problems]


def _decide(
    rules: RuleSet, trigger: str, **facts: object
) -> tuple[str | None, list[tuple[str, int]]]:
    snapshot = PropertySnapshot("P1", {"external_property_id": "P1", **facts})
    decision = decide(rules, trigger, EvaluationScope(snapshot.facts, NOW, DENVER))
    return decision.rule_id, [(s.slug, s.quantity) for s in decision.services]


def test_shipped_example_rules_load() -> None:
    """The rules/ folder users copy is valid against the bundled catalog."""
    rules = load_rule_set(REPO / "rules", CATALOG)
    assert set(rules.triggers) == {"vacant_ready", "construction_final"}
    assert len(rules.version) == 16


def test_first_hit_policy_takes_the_highest_priority_match() -> None:
    """Rules are tried by priority; the first whose condition holds wins."""
    rules = load_rule_set(REPO / "rules", CATALOG)
    assert _decide(rules, "vacant_ready", property_type="single_family", bedrooms=4) == (
        "sfr-full-marketing",
        [("photos", 25), ("zillow_3d_and_floor_plans", 1)],
    )
    assert (
        _decide(rules, "vacant_ready", property_type="single_family", bedrooms=2)[0] == "sfr-small"
    )


def test_computed_quantity_is_evaluated() -> None:
    """A quantity written as CEL is computed from the property."""
    rules = load_rule_set(REPO / "rules", CATALOG)
    assert _decide(rules, "vacant_ready", property_type="condo_townhouse", bedrooms=3)[1] == [
        ("photos", 20)
    ]


def test_a_condition_that_errors_is_false_and_traced() -> None:
    """A missing field makes the condition false, and the trace records why."""
    rules = _load(GOOD)
    snapshot = PropertySnapshot("P1", {"status": "Vacant Unrented Ready"})
    decision = decide(rules, "ready", EvaluationScope(snapshot.facts, NOW, DENVER))
    assert decision.rule_id is None
    when = next(t for t in decision.trace if t.kind == "when")
    assert when.error is not None
    assert "missing field" in when.error


def test_dates_compare_as_dates_in_the_source_time_zone() -> None:
    """A date fact plus an offset compares with `now`; dates are midnight in [source] timezone."""
    rules = _load(
        'triggers:\n  two_days_after_final: property.final + duration("48h") <= now\nrules: []\n'
    )
    facts = {"final": date(2026, 11, 25)}
    scope = EvaluationScope(facts, NOW, DENVER)
    assert trigger_values(rules, scope)[0] == {"two_days_after_final": True}
    scope = EvaluationScope({"final": date(2026, 11, 26)}, NOW, DENVER)
    assert trigger_values(rules, scope)[0] == {"two_days_after_final": False}


def test_yaml_1_1_booleans_stay_strings() -> None:
    """`No` and `on` stay text, so a status called No is compared as the string it is."""
    rules = _load(GOOD.replace('"Vacant Unrented Ready"', "'No'") + "    metadata: {flag: on}\n")
    assert rules.rules[0].metadata == {"flag": "on"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("triggers: [\n", "r.yaml:2: not valid YAML"),
        (
            GOOD.replace("property.bedrooms >= 3", "property.bedrooms >="),
            "r.yaml:6: rule 'sfr': when: CEL syntax error",
        ),
        (GOOD.replace("[ready]", "[vacant]"), "r.yaml:5: rule 'sfr': unknown trigger 'vacant'"),
        (
            GOOD.replace("slug: photos", "slug: drone"),
            "r.yaml:8: rule 'sfr': service 'drone' is not in the catalog",
        ),
        (
            GOOD.replace("quantity: 25", "quantity: 12"),
            "r.yaml:8: rule 'sfr': photos does not accept quantity 12",
        ),
        (GOOD + "    colour: blue\n", "r.yaml:9: rule 'sfr': colour: unknown field"),
        (
            GOOD + "    metadata: {a: '1', b: '2', c: '3', d: '4', e: '5'}\n",
            "r.yaml:9: rule 'sfr': metadata: at most 4 keys, found 5",
        ),
        (GOOD + "    metadata: {bad-key: x}\n", "r.yaml:9: rule 'sfr': metadata key 'bad-key'"),
        (
            GOOD + "    order_notes: " + "x" * 1001 + "\n",
            "r.yaml:9: rule 'sfr': order_notes: at most 1000 characters, found 1001",
        ),
        (
            GOOD + "    enabled: yes\n",
            "r.yaml:9: rule 'sfr': enabled: expected true or false, got the text 'yes'",
        ),
        (GOOD.replace("  ready:", "  ready: x\n  ready:"), "r.yaml:3: duplicate key 'ready'"),
        (GOOD + GOOD.split("rules:\n")[1], "r.yaml:9: rule id 'sfr' is used twice"),
        (
            GOOD.replace("    services:\n      - {slug: photos, quantity: 25}\n", ""),
            "r.yaml:4: rule 'sfr': services: required field is missing",
        ),
    ],
)
def test_mistakes_are_refused_with_file_line_and_reason(text: str, expected: str) -> None:
    """Each mistake gets its own message, starting with file:line."""
    problems = _problems(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_not_just_the_first() -> None:
    """Two independent mistakes in one file are both listed."""
    text = GOOD.replace("[ready]", "[vacant]").replace("quantity: 25", "quantity: 12")
    assert len(_problems(text)) == 2
