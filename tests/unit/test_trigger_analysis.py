"""Which fields triggers read and which triggers must be re-evaluated on an unchanged row."""

from __future__ import annotations

import pytest

from propready.core.expressions import fields_read, reads_variable
from propready.core.triggers import TriggerMemory, analyse_triggers, triggers_to_reevaluate


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ('property.status == "Vacant Unrented Ready"', {"status"}),
        ('has(property.final) && property["odd key"] > 1', {"final", "odd key"}),
        ('property.status == "property.other"', {"status"}),
        ("property.exists(k, k == 'x')", None),
        ("size(property) > 3", None),
        ("now > today", set()),
    ],
)
def test_fields_read(source: str, fields: set[str] | None) -> None:
    """Field references are found outside string literals; whole-map uses mean every field."""
    found = fields_read(source)
    assert (None if found is None else set(found)) == fields


def test_uses_variable_ignores_string_literals() -> None:
    """`now` inside a string is not a use of the clock."""
    assert reads_variable("property.d < now", "now")
    assert not reads_variable('property.note == "now"', "now")


def test_analysis_classifies_triggers() -> None:
    """Time-based and change-based triggers are told apart; fields are the union read."""
    analysis = analyse_triggers(
        {
            "ready": 'property.status == "Vacant Unrented Ready"',
            "two_days": 'property.final + duration("48h") <= now',
            "rent": "has(previous.rent) && previous.rent != property.rent",
        }
    )
    assert analysis.fields == {"status", "final", "rent"}
    assert analysis.time_based == {"two_days"}
    assert analysis.change_based == {"rent"}


def test_unchanged_rows_reevaluate_only_what_can_move() -> None:
    """Full passes add time-based triggers; true change triggers fall back; new triggers count."""
    analysis = analyse_triggers(
        {"a": "property.x == 1", "t": "now > property.d", "c": "previous.x != property.x"}
    )
    memory = {
        "a": TriggerMemory(True, 1),
        "t": TriggerMemory(False, 0),
        "c": TriggerMemory(False, 0),
    }
    assert triggers_to_reevaluate(analysis, memory, full_pass=False) == set()
    assert triggers_to_reevaluate(analysis, memory, full_pass=True) == {"t"}
    memory["c"] = TriggerMemory(True, 1)
    assert triggers_to_reevaluate(analysis, memory, full_pass=False) == {"c"}
    del memory["a"]
    assert triggers_to_reevaluate(analysis, memory, full_pass=False) == {"a", "c"}


def test_remembered_fields_follow_every_use_of_previous() -> None:
    """Only fields `previous` reads (in triggers or rules) are kept; a whole-map use keeps all."""
    triggers = {"rent": "has(previous.rent) && previous.rent != property.rent"}
    assert analyse_triggers({"a": "property.x == 1"}).remembered == set()
    assert analyse_triggers(triggers).remembered == {"rent"}
    assert analyse_triggers(triggers, ["previous.status == 'Occupied'"]).remembered == {
        "rent",
        "status",
    }
    assert analyse_triggers(triggers, ["size(previous) > 0"]).remembered is None
