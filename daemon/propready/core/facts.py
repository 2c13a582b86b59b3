"""Typing source rows into facts rules can trust (pure): dates as dates, numbers as numbers.

SQLite hands back text for dates and timestamps; PostgreSQL hands back typed values. Either way,
rules see `date`, aware `datetime`, `int`/`float`/`Decimal`, `bool` and `str`, never strings to
parse. A column's kind comes from `[source.types]` when the operator declares it, else from its
name (`*_date`/`*_on` are dates, `*_at`/`*_time` timestamps, the payload's numeric fields numbers).

A row that cannot be typed or fails a sanity check is quarantined with the column and the reason:
no id, an id over 255 characters, a date that does not parse, a negative or absurd number, a
`state` that is not a US state, text that is not valid UTF-8.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from propready.core.model import PropertySnapshot
from propready.core.planning import US_STATES

ColumnKind = Literal["date", "timestamp", "number", "integer", "boolean", "text"]

# Sanity ranges for the fields the order payload carries: outside them a value is a data error
# (a sentinel like -1 or 99999), not a home.
_RANGES: dict[str, tuple[Decimal, Decimal]] = {
    "bedrooms": (Decimal(0), Decimal(50)),
    "bathrooms": (Decimal(0), Decimal(50)),
    "square_footage": (Decimal(1), Decimal(100_000)),
    "price": (Decimal(0), Decimal(100_000_000)),
    "latitude": (Decimal(-90), Decimal(90)),
    "longitude": (Decimal(-180), Decimal(180)),
}
_NUMERIC_BY_NAME = frozenset(_RANGES)
_TRUE = frozenset({"1", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "n", "no"})


class InvalidText:
    """Bytes a source returned that are not UTF-8 (SQLite stores whatever it is given)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return f"InvalidText({len(self.raw)} bytes)"


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A source row that was quarantined: which property (if known), which column, and why."""

    external_property_id: str | None
    column: str
    reason: str


def column_kind(column: str, declared: Mapping[str, ColumnKind]) -> ColumnKind | None:
    if column in declared:
        return declared[column]
    if column.endswith(("_date", "_on")):
        return "date"
    if column.endswith(("_at", "_time")):
        return "timestamp"
    if column in _NUMERIC_BY_NAME:
        return "number"
    return None


Converter = Callable[[Any], Any]


class RowTyper:
    """Types rows of one query shape; built once per poll, applied to every row."""

    def __init__(
        self,
        columns: Sequence[str],
        zone: tzinfo,
        declared: Mapping[str, ColumnKind] | None = None,
    ) -> None:
        self.columns = tuple(columns)
        self.zone = zone
        declared = declared or {}
        self._kinds = {c: column_kind(c, declared) for c in self.columns}
        try:
            self.id_index = self.columns.index("external_property_id")
        except ValueError:
            raise ValueError("the source query returns no external_property_id column") from None

    def property_id(self, values: Sequence[Any]) -> str | RowProblem:
        raw = values[self.id_index]
        if isinstance(raw, InvalidText):
            return RowProblem(None, "external_property_id", "text is not valid UTF-8")
        if raw is None or str(raw).strip() == "":
            return RowProblem(None, "external_property_id", "the row has no property id")
        property_id = str(raw).strip()
        if len(property_id) > 255:
            return RowProblem(
                property_id[:60], "external_property_id", "longer than 255 characters"
            )
        return property_id

    def type_row(
        self, values: Sequence[Any], only: Iterable[str] | None = None
    ) -> PropertySnapshot | RowProblem:
        """Type every column (or only the `only` columns, for a row already known to be clean)."""
        property_id = self.property_id(values)
        if isinstance(property_id, RowProblem):
            return property_id
        wanted = None if only is None else set(only)
        facts: dict[str, Any] = {}
        for column, value in zip(self.columns, values, strict=True):
            if wanted is not None and column not in wanted:
                continue
            try:
                facts[column] = self._typed(column, value)
            except ValueError as exc:
                return RowProblem(property_id, column, str(exc))
        facts["external_property_id"] = property_id
        return PropertySnapshot(property_id, facts)

    def _typed(self, column: str, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, InvalidText):
            raise ValueError("text is not valid UTF-8")
        if isinstance(value, bytes | memoryview):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("text is not valid UTF-8") from None
        kind = self._kinds[column]
        typed = _CONVERTERS[kind](value, self.zone) if kind is not None else value
        return _checked(column, typed)


def _to_date(value: Any, zone: tzinfo) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a date (YYYY-MM-DD)") from None


def _to_timestamp(value: Any, zone: tzinfo) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=zone)
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a timestamp (ISO 8601)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def _to_number(value: Any, zone: tzinfo) -> int | float | Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    if isinstance(value, int | float | Decimal):
        return value
    text = str(value).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text[:40]!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{text[:40]!r} is not a finite number")
    return number


def _to_integer(value: Any, zone: tzinfo) -> int:
    number = _to_number(value, zone)
    if number != int(number):
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def _to_boolean(value: Any, zone: tzinfo) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{str(value)[:40]!r} is not a yes/no value")


def _to_text(value: Any, zone: tzinfo) -> str:
    return value if isinstance(value, str) else str(value)


_CONVERTERS: dict[ColumnKind, Callable[[Any, tzinfo], Any]] = {
    "date": _to_date,
    "timestamp": _to_timestamp,
    "number": _to_number,
    "integer": _to_integer,
    "boolean": _to_boolean,
    "text": _to_text,
}


def _checked(column: str, value: Any) -> Any:
    bounds = _RANGES.get(column)
    if bounds is not None and isinstance(value, int | float | Decimal):
        low, high = bounds
        if not low <= Decimal(str(value)) <= high:
            raise ValueError(f"{value} is outside the plausible range {low} to {high}")
    if column == "state" and isinstance(value, str) and value.strip().upper() not in US_STATES:
        raise ValueError(f"{value[:20]!r} is not a US state abbreviation")
    return value


def type_row(row: Mapping[str, Any], zone: tzinfo) -> PropertySnapshot | RowProblem:
    """Type one row given as a mapping (tests, simulate, explain)."""
    return RowTyper(list(row), zone).type_row(list(row.values()))


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
