"""The flat form of a CEL expression (`property.NAME` read as a top-level variable) is only a
faster way to the same answer: same values, same errors, same traces as the map form."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propready.core.expressions import (
    EvaluationScope,
    SourceLocation,
    compile_expression,
    flat_source,
)
from propready.core.expressions import _tokens as tokens_of

ZONE = ZoneInfo("America/Denver")
NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
HERE = SourceLocation("test.yaml", 1)

EXPRESSIONS = [
    'property.status == "Vacant Unrented Ready"',
    'property.property_type == "single_family" && property.bedrooms >= 3',
    "property.bedrooms >= 3 || property.price > 200000",
    "property.price < 150000.0",
    "property.construction_final_date != null",
    "property.construction_final_date <= today",
    "now - property.construction_final_date > duration('72h')",
    'property.city in ["Denver", "Aurora"]',
    "property.bedrooms * 2 > 5",
    'property.status.startsWith("Vacant")',
    "has(property.pool) && property.pool",
    'property["bedrooms"] >= 3',
    "size(property) > 3",
    '"property.bedrooms" == property.status',
    "previous.bedrooms != property.bedrooms",
]


def expression(source: str) -> Any:
    return compile_expression(source, HERE)


@pytest.mark.parametrize(
    ("source", "flat"),
    [
        ("property.bedrooms >= 3", "_f_bedrooms >= 3"),
        ('property.a == "property.b" && now > today', '_f_a == "property.b" && now > today'),
        ("property.a.b == 1 // property.c", "_f_a.b == 1 // property.c"),
        ("has(property.a)", None),  # has() needs a field selection
        ('property["a"] == 1', None),
        ("size(property) > 1", None),
        ("property.size() > 1", None),
        ("[1, 2].exists(x, x == property.a)", None),  # comprehensions keep the map
        ("now > today", "now > today"),
    ],
)
def test_only_plain_field_reads_are_written_flat(source: str, flat: str | None) -> None:
    assert flat_source(source, tokens_of(source)) == flat


def test_a_missing_fact_gives_the_map_forms_error_text() -> None:
    when = expression("property.bedrooms >= 3")
    assert when.flat is not None
    scope = EvaluationScope({"status": "Occupied"}, NOW, ZONE)
    assert scope.is_true(when) == (False, "missing field: 'bedrooms'")
    assert scope.evaluate(when) == (None, "missing field: 'bedrooms'")
    nulls = EvaluationScope({"bedrooms": None}, NOW, ZONE)
    flat_answer = nulls.is_true(when)
    assert flat_answer[0] is False
    assert flat_answer == EvaluationScope({"bedrooms": None}, NOW, ZONE).is_true(
        replace(when, flat=None)
    )


FACT_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False),
    st.sampled_from(["Vacant Unrented Ready", "Occupied", "Denver", "single_family", ""]),
    st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)),
)
FACTS = st.dictionaries(
    st.sampled_from(
        [
            "status",
            "property_type",
            "bedrooms",
            "price",
            "construction_final_date",
            "city",
            "pool",
            "not an identifier",
        ]
    ),
    FACT_VALUES,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(facts=FACTS, previous=st.one_of(st.none(), FACTS))
def test_the_flat_form_answers_exactly_as_the_map_form(
    facts: dict[str, Any], previous: dict[str, Any] | None
) -> None:
    for source in EXPRESSIONS:
        when = expression(source)
        mapped = replace(when, flat=None)
        fast = EvaluationScope(facts, NOW, ZONE, previous)
        slow = EvaluationScope(facts, NOW, ZONE, previous)
        assert fast.evaluate(when) == slow.evaluate(mapped), source
        assert fast.is_true(when) == slow.is_true(mapped), source


def test_decimal_and_date_facts_read_the_same_both_ways() -> None:
    facts = {"price": Decimal("149999.99"), "construction_final_date": date(2026, 11, 20)}
    scope = EvaluationScope(facts, NOW, ZONE)
    for source in ("property.price < 150000.0", "property.construction_final_date <= today"):
        when = expression(source)
        assert when.flat is not None
        assert scope.is_true(when) == (True, None)
    assert scope._context is None  # answered by the flat form: the map was never built
    for source in ("property.price < 150000.0", "property.construction_final_date <= today"):
        assert scope.is_true(replace(expression(source), flat=None)) == (True, None)
