"""Typing source rows: declared and name-based kinds, sanity checks, and quarantine reasons."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from propready.core.facts import InvalidText, RowProblem, RowTyper
from propready.core.model import PropertySnapshot

DENVER = ZoneInfo("America/Denver")
COLUMNS = (
    "external_property_id",
    "status",
    "construction_final_date",
    "updated_at",
    "bedrooms",
    "price",
    "state",
    "moved_out",
)


def typed(*values: object, declared: dict[str, str] | None = None) -> PropertySnapshot | RowProblem:
    return RowTyper(COLUMNS, DENVER, declared or {}).type_row(list(values))  # type: ignore[arg-type]


def test_text_dates_timestamps_and_numbers_are_typed() -> None:
    """SQLite-style text becomes date, aware datetime (source zone when naive) and Decimal."""
    snapshot = typed(
        " U1 ",
        "Occupied",
        "2026-11-20",
        "2026-11-20 08:30:00",
        "3",
        "2150.50",
        "co",
        "2026-10-01",
        declared={"moved_out": "date"},
    )
    assert isinstance(snapshot, PropertySnapshot)
    facts = snapshot.facts
    assert facts["external_property_id"] == "U1"
    assert facts["construction_final_date"] == date(2026, 11, 20)
    assert facts["updated_at"] == datetime(2026, 11, 20, 8, 30, tzinfo=DENVER)
    assert facts["bedrooms"] == Decimal(3)
    assert facts["price"] == Decimal("2150.50")
    assert facts["moved_out"] == date(2026, 10, 1)


def test_driver_typed_values_pass_through() -> None:
    """Values PostgreSQL already typed are kept as they are (aware datetimes stay in their zone)."""
    stamp = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    snapshot = typed("U1", "Occupied", date(2026, 11, 20), stamp, 3, Decimal("2150.50"), "CO", None)
    assert isinstance(snapshot, PropertySnapshot)
    assert snapshot.facts["updated_at"] is stamp
    assert snapshot.facts["bedrooms"] == 3


@pytest.mark.parametrize(
    ("values", "column", "reason"),
    [
        ((None,), "external_property_id", "no property id"),
        (("   ",), "external_property_id", "no property id"),
        (("x" * 300,), "external_property_id", "longer than 255"),
        (("U1", "s", "20/11/2026"), "construction_final_date", "is not a date"),
        (("U1", "s", None, "yesterday"), "updated_at", "is not a timestamp"),
        (("U1", "s", None, None, -1), "bedrooms", "outside the plausible range"),
        (("U1", "s", None, None, 3, "12,50"), "price", "is not a number"),
        (("U1", "s", None, None, 3, 1e12), "price", "outside the plausible range"),
        (("U1", "s", None, None, 3, 10, "ZZ"), "state", "not a US state"),
        (("U1", InvalidText(b"\xff")), "status", "not valid UTF-8"),
        ((InvalidText(b"\xff"),), "external_property_id", "not valid UTF-8"),
    ],
)
def test_dirty_values_are_refused_with_column_and_reason(
    values: tuple[object, ...], column: str, reason: str
) -> None:
    """Each dirty value yields a RowProblem naming its column."""
    padded = list(values) + [None] * (len(COLUMNS) - len(values))
    problem = typed(*padded)
    assert isinstance(problem, RowProblem)
    assert problem.column == column
    assert reason in problem.reason


def test_declared_boolean_and_integer_kinds() -> None:
    """[source.types] can declare yes/no and whole-number columns."""
    typer = RowTyper(
        ("external_property_id", "pets", "units"), DENVER, {"pets": "boolean", "units": "integer"}
    )
    snapshot = typer.type_row(["U1", "Y", "4"])
    assert isinstance(snapshot, PropertySnapshot)
    assert snapshot.facts["pets"] is True
    assert snapshot.facts["units"] == 4
    problem = typer.type_row(["U1", "maybe", "4.5"])
    assert isinstance(problem, RowProblem)
    assert problem.column == "pets"


def test_narrow_typing_types_only_the_named_columns() -> None:
    """A row already known to be clean can be typed for the trigger fields alone."""
    snapshot = RowTyper(COLUMNS, DENVER).type_row(
        ["U1", "Occupied", "2026-11-20", None, 3, 10, "CO", None], only={"construction_final_date"}
    )
    assert isinstance(snapshot, PropertySnapshot)
    assert snapshot.facts == {
        "construction_final_date": date(2026, 11, 20),
        "external_property_id": "U1",
    }


def test_a_query_without_the_id_column_is_refused() -> None:
    """The source query must return external_property_id."""
    with pytest.raises(ValueError, match="external_property_id"):
        RowTyper(("code", "status"), DENVER)
