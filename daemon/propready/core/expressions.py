"""CEL expressions: compiling with locations, converting facts to CEL values, evaluating safely.

Null semantics (design.md section 5): CEL raises on `null > 1` and on a field the property lacks.
A condition whose evaluation raises is *false*, and the error is kept in the decision trace, so a
home with a missing value is never ordered by accident and an analyst can see why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

import cel

_CEL_LOCATION = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")


@dataclass(frozen=True, slots=True)
class SourceLocation:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ExpressionError(ValueError):
    """A CEL expression does not compile; `line` is the line in the rule file."""

    def __init__(self, message: str, location: SourceLocation) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    program: Any  # cel.Program (the package ships no type information)
    location: SourceLocation


def compile_expression(source: str, location: SourceLocation) -> Expression:
    """Compile CEL, mapping the compiler's `<input>:LINE:COL` onto the rule file's own line."""
    try:
        program = cel.compile(source)
    except ValueError as exc:
        text = str(exc)
        match = _CEL_LOCATION.search(text)
        line = location.line
        reason = text.splitlines()[0]
        if match:
            # Block scalars (`when: |`) start on the line after the key.
            offset = int(match.group(1)) - 1 + (1 if "\n" in source.rstrip("\n") else 0)
            line = location.line + offset
            reason = f"CEL syntax error at column {match.group(2)}: {match.group(3)}"
        raise ExpressionError(reason, SourceLocation(location.file, line)) from None
    return Expression(source, program, location)


def to_cel_value(value: Any, zone: tzinfo) -> Any:
    """Python values as the CEL binding accepts them.

    Dates become midnight in the source's time zone and datetimes get a fixed UTC offset: the
    binding rejects `date` and `ZoneInfo`-aware datetimes, and takes naive ones as UTC.
    """
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=zone)
        offset = aware.utcoffset() or timedelta(0)
        return aware.astimezone(timezone(offset))
    if isinstance(value, date):
        return to_cel_value(datetime.combine(value, time.min, tzinfo=zone), zone)
    if isinstance(value, Mapping):
        return {str(k): to_cel_value(v, zone) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_cel_value(v, zone) for v in value]
    return value


class EvaluationScope:
    """One CEL context per property, reused across every trigger and rule (several times faster)."""

    def __init__(
        self,
        facts: Mapping[str, Any],
        now: datetime,
        zone: tzinfo,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        local_now = now.astimezone(zone)
        today = datetime.combine(local_now.date(), time.min, tzinfo=zone)
        self._context = cel.Context()
        self._context.add_variable("property", to_cel_value(dict(facts), zone))
        self._context.add_variable("now", to_cel_value(now.astimezone(UTC), zone))
        self._context.add_variable("today", to_cel_value(today, zone))
        self._context.add_variable("previous", to_cel_value(dict(previous or {}), zone))

    def evaluate(self, expression: Expression) -> tuple[Any, str | None]:
        """(value, None) or (None, error text) when evaluation raised."""
        try:
            return expression.program.execute(self._context), None
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
            kind = "missing field" if isinstance(exc, KeyError) else type(exc).__name__
            return None, f"{kind}: {str(exc).splitlines()[0][:200]}"

    def is_true(self, expression: Expression) -> tuple[bool, str | None]:
        value, error = self.evaluate(expression)
        if error is not None:
            return False, error
        if not isinstance(value, bool):
            return False, f"condition gave {type(value).__name__}, not a boolean"
        return value, None
