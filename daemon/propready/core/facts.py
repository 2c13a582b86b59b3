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

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from propready.core.model import SECRET_FACTS, PropertySnapshot
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
_CHECKED = frozenset({*_RANGES, "state"})
_NUMBER_TYPES = (int, float, Decimal)
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
    """Types rows of one query shape; built once per poll, applied to every row.

    The per-row work is the hot path of a first pass over a large portfolio, so the columns that
    need a conversion or a sanity check are worked out once here (one function per column that
    converts and checks), and every other value is copied as the driver returned it, after a
    scan that refuses what cannot be stored or evaluated anywhere: NUL and other control
    characters, text over its length limit, NaN and infinite numbers, bytes that are not UTF-8.
    """

    def __init__(
        self,
        columns: Sequence[str],
        zone: tzinfo,
        declared: Mapping[str, ColumnKind] | None = None,
        *,
        check_encoding: bool = True,
        secret_columns: Iterable[str] = SECRET_FACTS,
    ) -> None:
        self.columns = tuple(columns)
        self.secrets = frozenset(secret_columns)
        self.zone = zone
        self.check_encoding = check_encoding  # only sources that can hand back bad bytes
        declared = declared or {}
        try:
            self.id_index = self.columns.index("external_property_id")
        except ValueError:
            raise ValueError("the source query returns no external_property_id column") from None
        self._work: tuple[tuple[int, str, Callable[[Any], Any]], ...] = tuple(
            (index, column, _step(column, kind, zone))
            for index, column in enumerate(self.columns)
            if (kind := column_kind(column, declared)) is not None or column in _CHECKED
        )
        self._narrow: dict[frozenset[str], tuple[tuple[int, str, Callable[[Any], Any]], ...]] = {}
        self._converters = {
            column: _CONVERTERS[kind]
            for column in self.columns
            if (kind := column_kind(column, declared)) is not None
        }
        self._limits = tuple(TEXT_LIMITS.get(column, MAX_TEXT_LENGTH) for column in self.columns)
        self._shortest_limit = min(self._limits)

    def retype(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Facts read back from the state database (JSON) with their types restored.

        `previous` in CEL must compare like with like: a stored date is ISO text in JSON and
        becomes a date again here, so `previous.x != property.x` means what it says.
        """
        facts = dict(stored)
        for column, convert in self._converters.items():
            value = facts.get(column)
            if value is not None:
                try:
                    facts[column] = convert(value, self.zone)
                except ValueError:
                    facts[column] = None  # stored before a [source.types] change; unknowable
        return facts

    def property_id(self, values: Sequence[Any]) -> str | RowProblem:
        raw = values[self.id_index]
        if type(raw) is str:  # the usual case, decided without the slow path's checks
            property_id = raw.strip()
            if property_id and len(property_id) <= 255 and property_id.isprintable():
                return property_id
        if isinstance(raw, InvalidText):
            return RowProblem(None, "external_property_id", "text is not valid UTF-8")
        if raw is None or str(raw).strip() == "":
            return RowProblem(None, "external_property_id", "the row has no property id")
        property_id = str(raw).strip()
        if len(property_id) > 255:
            return RowProblem(
                property_id[:60], "external_property_id", "longer than 255 characters"
            )
        if _CONTROL.search(property_id):
            return RowProblem(None, "external_property_id", "contains control characters")
        return property_id

    def type_row(
        self,
        values: Sequence[Any],
        only: Iterable[str] | None = None,
        *,
        property_id: str | None = None,
        screened: bool = False,
    ) -> PropertySnapshot | RowProblem:
        """Type every column (or only the `only` columns, for a row already known to be clean).

        `property_id`: the row's id when the caller already read it (`property_id(values)`);
        `screened`: the row's batch already went through a `BatchScreen`, which found nothing.
        """
        if property_id is None:
            found = self.property_id(values)
            if isinstance(found, RowProblem):
                return found
            property_id = found
        if only is None:
            problem = None if screened else self._refuse_unstorable(property_id, values)
            if problem is not None:
                return problem
            facts = dict(zip(self.columns, values, strict=True))
            work = self._work
        else:
            wanted = frozenset(only)
            facts = {c: v for c, v in zip(self.columns, values, strict=True) if c in wanted}
            work = self._narrow.get(wanted) or self._narrow.setdefault(
                wanted, tuple(w for w in self._work if w[1] in wanted)
            )
        for index, column, step in work:
            value = values[index]
            if value is None:
                continue
            try:
                facts[column] = step(value)
            except (ValueError, ArithmeticError) as exc:
                return RowProblem(property_id, column, str(exc))
        facts["external_property_id"] = property_id
        return PropertySnapshot(property_id, facts, self.secrets)

    def _refuse_unstorable(self, property_id: str, values: Sequence[Any]) -> RowProblem | None:
        """The first value no database, JSON document or CEL context can take, if any.

        Checked in bulk first (one search over the row's text, one finiteness test over its
        numbers), column by column only when something is wrong: most rows are clean.
        """
        texts = [v for v in values if type(v) is str]
        numbers = [v for v in values if type(v) is float or type(v) is Decimal]
        suspect = (
            (
                texts
                and (
                    _CONTROL.search("\n".join(texts)) or max(map(len, texts)) > self._shortest_limit
                )
            )
            or not all(map(_finite, numbers))
            or (self.check_encoding and any(type(v) is InvalidText for v in values))
        )
        if not suspect:
            return None
        for column, value, limit in zip(self.columns, values, self._limits, strict=True):
            reason = _unstorable(value, limit)
            if reason is not None:
                return RowProblem(property_id, column, reason)
        return None


class BatchScreen:
    """Which rows of a batch hold a value nothing can store or evaluate, found column by column.

    The same checks as `RowTyper._refuse_unstorable`, done per column over the whole batch with
    the interpreter's C loops (one search over a column's joined text, one finiteness test over
    its numbers); only a column that fails is looked at row by row. Computed on first use, so a
    batch of unchanged rows (which are not typed) costs nothing.
    """

    def __init__(self, typer: RowTyper, rows: Sequence[Sequence[Any]]) -> None:
        self.typer = typer
        self.rows = rows
        self._problems: dict[int, tuple[str, str]] | None = None

    def problem(self, index: int) -> tuple[str, str] | None:
        """(column, reason) for row `index` of the batch, or None when it is clean."""
        if self._problems is None:
            self._problems = self._screen()
        return self._problems.get(index)

    def _screen(self) -> dict[int, tuple[str, str]]:
        problems: dict[int, tuple[str, str]] = {}
        if not self.rows:
            return problems
        typer = self.typer
        for position, column_values in enumerate(zip(*self.rows, strict=True)):
            limit = typer._limits[position]
            if _column_is_clean(column_values, limit, typer.check_encoding):
                continue
            column = typer.columns[position]
            for index, value in enumerate(column_values):
                reason = _unstorable(value, limit)
                if reason is not None and index not in problems:
                    problems[index] = (column, reason)
        return problems


_NUMERIC_KINDS = frozenset({int, float, Decimal, bool, type(None)})
_TEXT_KINDS = frozenset({str, type(None)})
_PLAIN_KINDS = frozenset({int, bool, date, datetime, type(None)})


def _column_is_clean(values: Sequence[Any], limit: int, check_encoding: bool) -> bool:
    kinds = set(map(type, values))
    if kinds <= _PLAIN_KINDS:
        return True
    if kinds <= _TEXT_KINDS:
        present = list(filter(None, values))
        return not present or (
            max(map(len, present)) <= limit and not _CONTROL.search("\n".join(present))
        )
    if kinds <= _NUMERIC_KINDS:
        try:
            return all(map(math.isfinite, filter(None, values)))
        except (OverflowError, ValueError, TypeError):
            return False
    return False  # mixed or unusual types (SQLite, bytes, InvalidText): look row by row


# Longest text accepted in any column, and in the payload's fields (the vendor's limits).
MAX_TEXT_LENGTH = 10_000
TEXT_LIMITS: dict[str, int] = {
    "external_property_id": 255,
    "billing_entity_slug": 255,
    "street": 255,
    "street2": 255,
    "city": 255,
    "state": 255,
    "postal_code": 255,
    "property_type": 255,
    "method_of_access": 255,
    "access_code": 255,
    "lockbox_location": 255,
    "onsite_contact_name": 255,
    "onsite_contact_phone": 255,
    "onsite_contact_email": 254,
}
# NUL (which PostgreSQL text and JSON cannot hold) and the other C0 controls except tab,
# newline and carriage return, and DEL: never part of a home's data.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _finite(value: float | Decimal) -> bool:
    try:
        return math.isfinite(value)
    except (OverflowError, ValueError):  # a Decimal too large for a float
        return False


def _unstorable(value: Any, limit: int) -> str | None:
    kind = type(value)
    if kind is InvalidText:
        return "text is not valid UTF-8"
    if kind is str:
        if _CONTROL.search(value):
            return "contains control characters (NUL or other non-printing characters)"
        if len(value) > limit:
            return f"text of {len(value)} characters is over the limit of {limit}"
    elif (kind is float or kind is Decimal) and not _finite(value):
        return f"{value} is not a finite number"
    return None


# Values already of the kind's type need no conversion (what a typed driver returns).
_ALREADY: dict[ColumnKind, frozenset[type]] = {
    "date": frozenset({date}),
    "number": frozenset({int, float, Decimal}),
    "integer": frozenset({int}),
    "boolean": frozenset({bool}),
    "text": frozenset({str}),
    "timestamp": frozenset(),
}


def _step(column: str, kind: ColumnKind | None, zone: tzinfo) -> Callable[[Any], Any]:
    """One column's conversion and sanity check as one function."""
    convert = _CONVERTERS[kind] if kind is not None else None
    already = _ALREADY[kind] if kind is not None else frozenset()
    bounds = _RANGES.get(column)
    is_state = column == "state"

    def step(value: Any) -> Any:
        if convert is not None and type(value) not in already:
            value = convert(value, zone)
        if bounds is not None and type(value) in _NUMBER_TYPES:
            low, high = bounds
            # int, float and Decimal compare with Decimal bounds directly: no conversion.
            if not low <= value <= high:
                raise ValueError(f"{value} is outside the plausible range {low} to {high}")
        elif is_state:
            _refuse_invalid_text(value)
            if isinstance(value, str) and value.strip().upper() not in US_STATES:
                raise ValueError(f"{value[:20]!r} is not a US state abbreviation")
        elif convert is None:
            _refuse_invalid_text(value)
        return value

    return step


def _refuse_invalid_text(value: Any) -> None:
    if type(value) is InvalidText:
        raise ValueError("text is not valid UTF-8")


def _to_date(value: Any, zone: tzinfo) -> date:
    _refuse_invalid_text(value)
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
    _refuse_invalid_text(value)
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
    if type(value) in _NUMBER_TYPES:  # what drivers return for numeric columns: nothing to do
        return value  # type: ignore[no-any-return]
    _refuse_invalid_text(value)
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
    _refuse_invalid_text(value)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{str(value)[:40]!r} is not a yes/no value")


def _to_text(value: Any, zone: tzinfo) -> str:
    _refuse_invalid_text(value)
    return value if isinstance(value, str) else str(value)


_CONVERTERS: dict[ColumnKind, Callable[[Any, tzinfo], Any]] = {
    "date": _to_date,
    "timestamp": _to_timestamp,
    "number": _to_number,
    "integer": _to_integer,
    "boolean": _to_boolean,
    "text": _to_text,
}


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
