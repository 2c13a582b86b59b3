"""CEL expressions whose cost cannot be bounded are refused at load; facts are size-capped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from propready.core.expression_cost import MAX_FACT_ITEMS, MAX_FACT_TEXT, regex_weight
from propready.core.expressions import (
    EvaluationScope,
    ExpressionError,
    SourceLocation,
    compile_expression,
)

WHERE = SourceLocation("rules.yaml", 7)
NOW = datetime(2026, 12, 1, tzinfo=UTC)
HUNDRED = "[" + ",".join(map(str, range(100))) + "]"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("property.a == 'x' || " * 60 + "true", "expression too long to bound its cost"),
        ("property.tags.map(x, property.tags.map(y, x == y)) == []", "nested or chained 2 deep"),
        ("property.tags.map(x, x).exists(y, y == 'a')", "nested or chained 2 deep"),
        (
            "property.a.exists(x, x == 1) || property.b.exists(x, x == 1)"
            " || property.c.exists(x, x == 1)",
            "3 comprehension macros (at most 2",
        ),
        ("property.exists(k, k == 'a')", "iterates over property as a whole"),
        ("(property.a + property.b).exists(x, x == 1)", "iterates over a computed value"),
        ("property.tags.all(x, x + 'a' == 'b')", "'+' inside a macro"),
        ('property.tags.exists(x, x.matches("a+"))', "matches() inside a macro"),
        ("[" + ",".join(map(str, range(101))) + "] == []", "a list literal of 101 elements"),
        ("property.a in [" + ",".join(map(str, range(101))) + "]", "list literal of 101"),
        ("(" * 14 + "1" + ")" * 14 + " == 1", "brackets nested more than 12 deep"),
        ("property.a.matches(property.b)", "matches() takes one string literal"),
        (r'property.a.matches(r"\w{100}")', "regular expressions too dear to compile"),
        (
            r'property.a.matches(r"\w{6}") && property.b.matches(r"\w{6}")',
            "weight 132, at most 120",
        ),
        (
            "property.tags.exists(x, " + " || ".join(["x == property.a"] * 20) + ")",
            "macro bodies of",
        ),
    ],
)
def test_costly_expressions_are_refused_with_their_reason(source: str, reason: str) -> None:
    """Each rule of the cost bound refuses its case, at the expression's place."""
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source, WHERE)
    assert reason in caught.value.message
    assert caught.value.location == WHERE


@pytest.mark.parametrize(
    "source",
    [
        "property.status == 'Vacant Unrented Ready' && property.bedrooms >= 3",
        "property.tags.exists(t, t == 'pool')",
        f"{HUNDRED}.exists(n, n == property.bedrooms)",
        f"property.bedrooms in {HUNDRED}",
        "size(property.tags.filter(t, t.startsWith('a'))) > 1 && property.x.all(v, v > 0)",
        r'property.postal_code.matches(r"^\d{5}(-\d{4})?$")',
        "x[0] == 1 || property.a + property.b == 'ab'",
        "property.construction_final_date + duration('48h') <= now",
    ],
)
def test_ordinary_expressions_are_accepted(source: str) -> None:
    """Conditions that operators write pass the cost rules."""
    compile_expression(source.replace("x[0]", "[1][0]"), WHERE)


def test_regex_weight_counts_repetitions_and_unicode_classes() -> None:
    """Counted repetitions multiply; Unicode classes weigh ten, digit and space classes one."""
    assert regex_weight("abc") == 1
    assert regex_weight(r"\d{5}") == 10
    assert regex_weight(r"\w{10}") == 110
    assert regex_weight(r"(a{10}){10}") == 100
    assert regex_weight(r"a{2,}") == 3
    assert regex_weight(r"a{2,9}") == 9


def test_a_fact_over_the_caps_is_not_evaluated() -> None:
    """An expression reading over-long text or an over-full list errors (false), unevaluated."""
    facts = {
        "notes": "n" * (MAX_FACT_TEXT + 1),
        "tags": ["t"] * (MAX_FACT_ITEMS + 1),
        "status": "ready",
    }
    scope = EvaluationScope(facts, NOW, UTC)
    for source in ("property.notes.contains('x')", "property.tags.exists(t, t == 'x')"):
        holds, error = scope.is_true(compile_expression(source, WHERE))
        assert holds is False
        assert error is not None
        assert "too large for rules" in error
    assert scope.is_true(compile_expression("property.status == 'ready'", WHERE)) == (True, None)


def test_facts_at_the_caps_are_evaluated() -> None:
    """Text of exactly 4,096 characters and lists of exactly 50 items are fine."""
    facts = {"notes": "n" * MAX_FACT_TEXT, "tags": ["t"] * MAX_FACT_ITEMS}
    scope = EvaluationScope(facts, NOW, UTC)
    expression = compile_expression(
        "property.notes.endsWith('n') && size(property.tags) == 50", WHERE
    )
    assert scope.is_true(expression) == (True, None)
