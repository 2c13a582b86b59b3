"""CEL expressions: compiling with locations, converting facts to CEL values, evaluating safely.

Null semantics (design.md section 5): CEL raises on `null > 1` and on a field the property lacks.
A condition whose evaluation raises is *false*, and the error is kept in the decision trace, so a
home with a missing value is never ordered by accident and an analyst can see why.

Field names: the `cel` binding's Program lists the variables an expression reads (`property`)
but not the fields read from them, so compiling also finds `property.NAME` and
`property["NAME"]` (and the same on `previous`) with a small tokenizer over the expression text.
A tokenizer, not a regular expression, because it must skip string literals (`"property.x"` is
text, not a reference) and comments, and must know comprehension variables
(`tags.exists(t, ...)`) to tell a typo (`proprety.x`) from a bound name.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any

import cel

from propready.core.expression_cost import (
    MACROS,
    MAX_FACT_ITEMS,
    MAX_FACT_TEXT,
    cost_problem,
    length_problem,
)
from propready.core.model import SECRET_FACTS

_CEL_LOCATION = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")

# What an expression may read: the property's facts, the time of the decision, today's midnight,
# and `previous`, the facts as they were when the property last changed (a map, empty when the
# property is new): `has(previous.rent) && previous.rent != property.rent` is a "field changed".
VARIABLES = frozenset({"property", "now", "today", "previous"})
_FACT_MAPS = frozenset({"property", "previous"})  # both hold the source query's columns
_MACROS = MACROS
_STRING = (
    r"[rRbB]{0,2}(?:'{3}(?:\\.|.)*?'{3}|\"{3}(?:\\.|.)*?\"{3}"
    r"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\")"
)
_TOKEN = re.compile(
    rf"(?P<comment>//[^\n]*)|(?P<string>{_STRING})|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<number>[0-9][0-9A-Za-z_.]*)|(?P<space>\s+)|(?P<punct>.)",
    re.DOTALL,
)


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
class FieldReference:
    """`property.NAME` (or `property["NAME"]`, or the same on `previous`) and where it stands."""

    name: str
    location: SourceLocation


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    program: Any  # cel.Program (the package ships no type information)
    location: SourceLocation
    references: tuple[FieldReference, ...] = ()
    # The same expression with each `property.NAME` read as a top-level variable (see
    # `flat_source`), or None when it cannot be written so; evaluated first, see EvaluationScope.
    flat: Any = None
    clock: bool = False  # reads `now` or `today`

    @property
    def fields(self) -> tuple[str, ...]:
        """The property fields this expression reads, each once, in order of appearance."""
        return tuple(dict.fromkeys(r.name for r in self.references))


def _line_in_file(source: str, location: SourceLocation, line_in_source: int) -> SourceLocation:
    # Block scalars (`when: |`) start on the line after the key.
    block = 1 if "\n" in source.rstrip("\n") else 0
    return SourceLocation(location.file, location.line + line_in_source + block)


def compile_expression(source: str, location: SourceLocation) -> Expression:
    """Compile CEL, mapping the compiler's `<input>:LINE:COL` onto the rule file's own line.

    Also refuses variables other than property, now, today and previous (a typo such as
    `proprety.x` would otherwise only fail at evaluation time, as a silently false condition).
    """
    too_long = length_problem(source)
    if too_long is not None:
        raise ExpressionError(too_long, location)
    try:
        program = cel.compile(source)
    except ValueError as exc:
        text = str(exc)
        match = _CEL_LOCATION.search(text)
        where = location
        reason = text.splitlines()[0]
        if match:
            where = _line_in_file(source, location, int(match.group(1)) - 1)
            reason = f"CEL syntax error at column {match.group(2)}: {match.group(3)}"
        raise ExpressionError(reason, where) from None
    tokens = _tokens(source)
    costly = cost_problem(tokens)
    if costly is not None:
        raise ExpressionError(f"too costly: {costly}", location)
    unknown = set(program.variables()) - VARIABLES - _bound_names(tokens)
    if unknown:
        name = sorted(unknown)[0]
        raise ExpressionError(
            f"unknown variable {name!r} (expressions read property, now, today and previous)",
            location,
        )
    references = tuple(
        FieldReference(name, _line_in_file(source, location, source.count("\n", 0, offset)))
        for name, offset in _field_references(tokens)
    )
    flat = flat_source(source, tokens)
    return Expression(
        source,
        program,
        location,
        references,
        cel.compile(flat) if flat is not None else None,
        clock=any(_names_map(tokens, i, _CLOCK) for i in range(len(tokens))),
    )


_CLOCK = frozenset({"now", "today"})


# `property.NAME` is read as the variable `_f_NAME` in an expression's flat form. The prefix
# cannot clash: compiling refuses any top-level name but property, now, today and previous.
FLAT_PREFIX = "_f_"


def flat_source(source: str, tokens: list[tuple[str, str, int]]) -> str | None:
    """The expression with every `property.NAME` written as the variable `_f_NAME`.

    Why: the CEL binding converts a map of facts several times slower than the same values as
    top-level variables (about 26 us against 4 us for twelve facts), and building that map was
    most of an evaluation's cost. None when `property` is used any other way (as a whole,
    `property["NAME"]`, a method or macro over it, `has()`, or a comprehension that could bind
    names): those keep the map alone.
    """
    if _bound_names(tokens) or any(kind == "ident" and text == "has" for kind, text, _ in tokens):
        return None
    pieces: list[str] = []
    last = 0
    for i in range(len(tokens)):
        if not _names_map(tokens, i, frozenset({"property"})):
            continue
        following = tokens[i + 1 : i + 4]
        if len(following) < 2 or following[0][1] != "." or following[1][0] != "ident":
            return None
        if len(following) == 3 and following[2][1] == "(":
            return None  # property.size(), property.exists(...)
        name = following[1]
        pieces += (source[last : tokens[i][2]], FLAT_PREFIX + name[1])
        last = name[2] + len(name[1])
    return "".join(pieces) + source[last:]


def _tokens(source: str) -> list[tuple[str, str, int]]:
    """(kind, text, offset) of every token except spaces and comments."""
    return [
        (match.lastgroup or "", match.group(), match.start())
        for match in _TOKEN.finditer(source)
        if match.lastgroup not in ("space", "comment")
    ]


def _bound_names(tokens: list[tuple[str, str, int]]) -> set[str]:
    """Variables bound by comprehension macros: `.exists(t, ...)` binds t."""
    bound = set()
    for i in range(len(tokens) - 4):
        dot, macro, paren, name, comma = tokens[i : i + 5]
        if (
            dot[1] == "."
            and macro[1] in _MACROS
            and paren[1] == "("
            and name[0] == "ident"
            and comma[1] == ","
        ):
            bound.add(name[1])
    return bound


def _accessed_field(tokens: list[tuple[str, str, int]], i: int) -> str | None:
    """The field read from the map named at token `i`: `map.field` or `map["field"]`; else None."""
    following = tokens[i + 1 : i + 4]
    if len(following) >= 2 and following[0][1] == "." and following[1][0] == "ident":
        return following[1][1]
    if (
        len(following) == 3
        and following[0][1] == "["
        and following[1][0] == "string"
        and following[2][1] == "]"
    ):
        literal = following[1][1].lstrip("rRbB")
        if not literal.startswith(("'''", '"""')):
            return literal[1:-1]
    return None


def _names_map(tokens: list[tuple[str, str, int]], i: int, names: frozenset[str]) -> bool:
    """Token `i` is one of the map variables `names` (not a member such as `x.property`)."""
    kind, text, _offset = tokens[i]
    return kind == "ident" and text in names and not (i > 0 and tokens[i - 1][1] == ".")


def _field_references(tokens: list[tuple[str, str, int]]) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for i in range(len(tokens)):
        if _names_map(tokens, i, _FACT_MAPS):
            field = _accessed_field(tokens, i)
            if field is not None:
                found.append((field, tokens[i][2]))
    return found


def fields_read(source: str, variable: str = "property") -> frozenset[str] | None:
    """The fields of `variable` (`property` or `previous`) that `source` reads.

    None when the expression uses the map as a whole (`size(property)`, a macro such as
    `property.exists(...)`), so any field may be read. The poll converts only the fields its
    triggers read into CEL, which is safe only with this answer.
    """
    tokens = _tokens(source)
    fields: set[str] = set()
    for i in range(len(tokens)):
        if not _names_map(tokens, i, frozenset({variable})):
            continue
        field = _accessed_field(tokens, i)
        called = tokens[i + 3 : i + 4] and tokens[i + 3][1] == "("  # property.exists(...)
        if field is None or called:
            return None  # the map used as a whole, or a macro or method over it
        fields.add(field)
    return frozenset(fields)


def reads_variable(source: str, variable: str) -> bool:
    """Whether `source` uses `variable` at all (string literals and comments do not count)."""
    tokens = _tokens(source)
    return any(
        kind == "ident" and text == variable and (i == 0 or tokens[i - 1][1] != ".")
        for i, (kind, text, _offset) in enumerate(tokens)
    )


def unknown_fields(expression: Expression, known: Collection[str]) -> list[FieldReference]:
    """References to fields the source query does not return."""
    return [r for r in expression.references if r.name not in known]


_PLAIN = frozenset({str, int, float, bool, Decimal, type(None)})


def oversized_facts(facts: Mapping[str, Any]) -> frozenset[str]:
    """Facts too large for an expression to read within its cost bound (expression_cost):
    text over MAX_FACT_TEXT characters, or a collection of over MAX_FACT_ITEMS items."""
    found = set()
    for key, value in facts.items():
        kind = type(value)
        if kind is str:
            if len(value) > MAX_FACT_TEXT:
                found.add(key)
        elif kind in _PLAIN:
            continue
        elif _too_large(value, [0]):
            found.add(key)
    return frozenset(found)


def _too_large(value: Any, seen: list[int]) -> bool:
    """Whether a (nested) collection holds over MAX_FACT_ITEMS items or any oversized text."""
    if isinstance(value, str | bytes):
        return len(value) > MAX_FACT_TEXT
    if isinstance(value, Mapping):
        items: Any = value.values()
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return False
    seen[0] += len(items)
    if seen[0] > MAX_FACT_ITEMS:
        return True
    return any(_too_large(item, seen) for item in items)


def _facts_value(facts: Mapping[str, Any], zone: tzinfo) -> dict[str, Any]:
    """The facts as one CEL map; only values the binding cannot take as they are get converted."""
    return {key: _cel_fact(value, zone) for key, value in facts.items()}


def _cel_fact(value: Any, zone: tzinfo) -> Any:
    return value if type(value) in _PLAIN else to_cel_value(value, zone)


@lru_cache(maxsize=64)
def _clock_values(now: datetime, zone: tzinfo) -> tuple[datetime, datetime]:
    """`now` and `today` as CEL takes them; a poll builds thousands of scopes with one `now`."""
    today = datetime.combine(now.astimezone(zone).date(), time.min, tzinfo=zone)
    return to_cel_value(now.astimezone(UTC), zone), to_cel_value(today, zone)


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
        *,
        secrets: frozenset[str] = SECRET_FACTS,
    ) -> None:
        self.secrets = secrets  # facts a trace shows masked (`[source] secret_columns`)
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        now_value, today_value = _clock_values(now, zone)
        self._facts = facts
        # Expressions that read one of these are not run (their cost would not be bounded).
        self._oversized = oversized_facts(facts) | (
            oversized_facts(previous) if previous else set()
        )
        self._zone = zone
        self._previous = previous
        self._clock = {"now": now_value, "today": today_value}
        # Facts as top-level variables for expressions' flat forms (compile_expression), in one
        # update: each change discards the binding's cached environment. The clock is added
        # when an expression first reads it (the binding converts each datetime at some cost),
        # and `previous` only when there is one: a flat form that reads an unbound `previous`
        # fails over to the map form, which has the empty map.
        variables = {
            FLAT_PREFIX + key: _cel_fact(value, zone)
            for key, value in facts.items()
            if key.isidentifier()  # only such names can be written `property.NAME`
        }
        if previous:
            variables["previous"] = _facts_value(previous, zone)
        self._flat = cel.Context()
        self._flat.update(variables)
        self._flat_clock = False
        self._context: Any = None  # the facts as one `property` map, built when first needed

    def _map_context(self) -> Any:
        if self._context is None:
            self._context = cel.Context()
            self._context.update(
                {
                    "property": _facts_value(self._facts, self._zone),
                    **self._clock,
                    "previous": _facts_value(self._previous, self._zone) if self._previous else {},
                }
            )
        return self._context

    def evaluate(self, expression: Expression) -> tuple[Any, str | None]:
        """(value, None) or (None, error text) when evaluation raised or was not attempted."""
        if self._oversized:
            too_large = sorted(self._oversized.intersection(expression.fields))
            if too_large:
                return None, (
                    f"fact {too_large[0]} is too large for rules (over {MAX_FACT_TEXT:,} "
                    f"characters or {MAX_FACT_ITEMS} items); not evaluated"
                )
        if expression.flat is not None:
            try:
                return self._execute_flat(expression), None
            except Exception:  # noqa: BLE001, S110 - the map form below gives CEL's own error
                pass  # a missing fact is an unknown variable here, `no such key` there
        return self._evaluate_map(expression)

    def _evaluate_map(self, expression: Expression) -> tuple[Any, str | None]:
        try:
            return expression.program.execute(self._map_context()), None
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
            kind = "missing field" if isinstance(exc, KeyError) else type(exc).__name__
            return None, f"{kind}: {str(exc).splitlines()[0][:200]}"

    def _execute_flat(self, expression: Expression) -> Any:
        if expression.clock and not self._flat_clock:
            self._flat.update(self._clock)
            self._flat_clock = True
        return expression.flat.execute(self._flat)

    def is_true(self, expression: Expression) -> tuple[bool, str | None]:
        if expression.flat is not None and not self._oversized:
            # The usual case, without `evaluate`'s steps: a rule set runs this for every rule
            # of every home that changed. When the flat form fails (a null, a missing fact),
            # the map form answers at once, with CEL's own error, without a second flat try.
            try:
                value = self._execute_flat(expression)
            except Exception:  # noqa: BLE001 - the map form gives CEL's own error
                value, error = self._evaluate_map(expression)
            else:
                error = None
        else:
            value, error = self.evaluate(expression)
        if error is not None:
            return False, error
        if not isinstance(value, bool):
            return False, f"condition gave {type(value).__name__}, not a boolean"
        return value, None

    def facts_read(self, expression: Expression) -> dict[str, Any]:
        """The facts an expression reads, as the property has them (absent fields left out)."""
        return {name: self._facts[name] for name in expression.fields if name in self._facts}
