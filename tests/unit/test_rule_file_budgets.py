"""The `budgets:` section and `allow_unpriced` in rule files: parsed, or refused with file:line."""

from __future__ import annotations

import pytest

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import RuleFileError, parse_rule_files
from propready.core.budgets import Budget
from propready.core.expressions import SourceLocation

CATALOG = load_catalog()
RULES = """\
triggers:
  ready: property.status == "Ready"
rules:
  - id: photos
    triggered_by: [ready]
    allow_unpriced: true
    services: [{slug: photos, quantity: 15}]
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        parse_rule_files([("budgets.yaml", RULES + text)], CATALOG)
    return [str(p) for p in caught.value.problems]


def test_budgets_are_parsed_with_their_defaults() -> None:
    """Scope, period, limits (dollars to cents), when_exceeded (hold by default), default names."""
    rules = parse_rule_files(
        [
            (
                "budgets.yaml",
                RULES + "budgets:\n"
                "  - {billing_entity_slug: '*', period: month, max_spend_usd: 40000.5}\n"
                "  - {period: day, max_orders: 50, when_exceeded: skip}\n"
                "  - name: entity-1-weekly\n"
                "    billing_entity_slug: investment_entity_1\n"
                "    period: week\n"
                "    max_orders: 0\n",
            )
        ],
        CATALOG,
    )
    assert rules.budgets == (
        Budget(
            "per-entity-month",
            "month",
            "hold",
            "*",
            max_spend_cents=4_000_050,
            location=SourceLocation("budgets.yaml", 9),
        ),
        Budget(
            "all-entities-day", "day", "skip", None, 50, location=SourceLocation("budgets.yaml", 10)
        ),
        Budget(
            "entity-1-weekly",
            "week",
            "hold",
            "investment_entity_1",
            0,
            location=SourceLocation("budgets.yaml", 11),
        ),
    )
    assert rules.rules[0].allow_unpriced


def test_a_rule_set_without_budgets_has_none() -> None:
    """No budgets section: no budgets, and rules do not allow unpriced orders by default."""
    rules = parse_rule_files([("r.yaml", RULES.replace("    allow_unpriced: true\n", ""))], CATALOG)
    assert rules.budgets == ()
    assert not rules.rules[0].allow_unpriced


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("budgets:\n  - {period: year, max_orders: 1}\n", "budgets.yaml:9: budgets[0]: period:"),
        (
            "budgets:\n  - {period: day}\n",
            "budgets.yaml:9: budget 'all-entities-day': needs max_orders",
        ),
        (
            "budgets:\n  - {period: day, max_spend_usd: 1.005}\n",
            "budgets.yaml:9: budget 'all-entities-day': max_spend_usd 1.005 has more than two",
        ),
        (
            "budgets:\n  - {period: day, max_orders: -1}\n",
            "budgets.yaml:9: budgets[0]: max_orders:",
        ),
        (
            "budgets:\n  - {period: day, max_spend_usd: '500'}\n",
            "budgets.yaml:9: budgets[0]: max_spend_usd: expected a number, got the text '500'",
        ),
        (
            "budgets:\n  - {period: day, max_orders: 1, when_exceeded: stop}\n",
            "budgets.yaml:9: budgets[0]: when_exceeded:",
        ),
        (
            "budgets:\n  - {period: day, max_orders: 1, billing_entity: x}\n",
            "budgets.yaml:9: budgets[0]: billing_entity: unknown field",
        ),
        (
            "budgets:\n  - {period: day, max_orders: 1}\n  - {period: day, max_spend_usd: 5}\n",
            "budgets.yaml:10: budget 'all-entities-day': the name is used twice (first at "
            "budgets.yaml:9)",
        ),
        (
            "budgets:\n  - period: day\n    max_orders: yes\n",
            "budgets.yaml:10: budgets[0]: max_orders: expected a number, got the text 'yes'",
        ),
    ],
)
def test_bad_budgets_are_refused_with_file_and_line(text: str, expected: str) -> None:
    """Each mistake is reported at its line, with the budget it belongs to."""
    problems = _problems(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_allow_unpriced_must_be_a_boolean() -> None:
    """`allow_unpriced: yes` is text in rule files, and refused."""
    with pytest.raises(RuleFileError) as caught:
        parse_rule_files(
            [("r.yaml", RULES.replace("allow_unpriced: true", "allow_unpriced: yes"))], CATALOG
        )
    assert "r.yaml:6: rule 'photos': allow_unpriced: expected true or false" in str(caught.value)
