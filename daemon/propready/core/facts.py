"""Typing source rows into facts rules can trust (pure): dates as dates, numbers as numbers.

SQLite hands back text for dates and timestamps; PostgreSQL hands back typed values. Either way,
rules see `date`, aware `datetime`, `int`/`float`/`Decimal` and `str`, never strings to parse.
A row that cannot be typed is quarantined with the column and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any

from propready.core.model import PropertySnapshot

_NUMERIC = ("bedrooms", "bathrooms", "price", "square_footage", "latitude", "longitude")


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A source row that was quarantined: which property (if known), which column, and why."""

    external_property_id: str | None
    column: str
    reason: str


def type_row(row: Mapping[str, Any], zone: tzinfo) -> PropertySnapshot | RowProblem:
    raw_id = row.get("external_property_id")
    if raw_id is None or str(raw_id).strip() == "":
        return RowProblem(None, "external_property_id", "the row has no property id")
    property_id = str(raw_id).strip()
    if len(property_id) > 255:
        return RowProblem(property_id[:60], "external_property_id", "longer than 255 characters")
    facts: dict[str, Any] = {}
    for column, value in row.items():
        try:
            facts[column] = _typed(column, value, zone)
        except ValueError as exc:
            return RowProblem(property_id, column, str(exc))
    facts["external_property_id"] = property_id
    return PropertySnapshot(property_id, facts)


def _typed(column: str, value: Any, zone: tzinfo) -> Any:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("text is not valid UTF-8") from None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return value
    if column.endswith(("_date", "_on")) and isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    if column.endswith(("_at", "_time")) and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a timestamp (ISO 8601)") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)
    if column in _NUMERIC and isinstance(value, str):
        try:
            return Decimal(value.strip())
        except ArithmeticError:
            raise ValueError(f"{value!r} is not a number") from None
    return value


def facts_for_storage(facts: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe facts (dates as ISO text, decimals as numbers) for the state database."""
    stored: dict[str, Any] = {}
    for key, value in facts.items():
        if isinstance(value, datetime | date):
            stored[key] = value.isoformat()
        elif isinstance(value, Decimal):
            stored[key] = int(value) if value == value.to_integral_value() else float(value)
        else:
            stored[key] = value
    return stored
