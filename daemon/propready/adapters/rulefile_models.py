"""The shape of a rule file (pydantic models) and validation errors an operator can act on.

Each part (the file, each trigger, each rule, each test) is validated on its own, so one broken
rule never hides the problems of the next: `propready rules check` lists them all.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from propready.adapters.rule_yaml import RuleProblem, YamlPath, line_of
from propready.core.expressions import SourceLocation

IDENTIFIER = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceModel(_Strict):
    slug: StrictStr
    quantity: Any = 1  # a whole number or a CEL expression as text: checked by the loader


class RuleModel(_Strict):
    id: StrictStr = Field(pattern=IDENTIFIER)
    triggered_by: list[StrictStr] = Field(min_length=1)
    when: StrictStr | None = None
    services: list[ServiceModel] = Field(min_length=1)
    billing_entity_slug: StrictStr | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict, max_length=4)
    order_notes: StrictStr | None = Field(default=None, max_length=1000)
    property_access: dict[StrictStr, Any] = Field(default_factory=dict)
    duplicate_window_hours: StrictInt | StrictFloat | None = Field(default=None, ge=0)
    priority: StrictInt = 0
    enabled: StrictBool = True
    requires_approval: StrictBool = False
    allow_unpriced: StrictBool = False
    # When PlanOmatic cancels the order: re-order the home (at most once per readiness) or
    # leave it to a person (the attention item vendor_canceled).
    on_vendor_cancel: Literal["reorder", "notify"] = "notify"


class ExpectModel(_Strict):
    rule: StrictStr | None = None
    services: list[ServiceModel] | None = None
    no_order: StrictBool = False


class TestModel(_Strict):
    name: StrictStr = Field(min_length=1)
    trigger: StrictStr
    property: dict[StrictStr, Any]
    now: datetime | None = None
    expect: ExpectModel


class FileModel(_Strict):
    hit_policy: Literal["first", "collect"] | None = None
    triggers: dict[StrictStr, Any] = Field(default_factory=dict)
    rules: list[Any] = Field(default_factory=list)
    tests: list[Any] = Field(default_factory=list)
    budgets: list[Any] = Field(default_factory=list)  # rulefile_budgets.py


# pydantic names the union member it tried in an error's location; not part of the YAML path.
_UNION_MEMBERS = frozenset({"str", "int", "float", "bool", "none", "function-after[...]"})


def validation_problems(
    exc: ValidationError,
    model: type[BaseModel],
    file: str,
    lines: dict[YamlPath, int],
    base: YamlPath,
    label: str,
) -> list[RuleProblem]:
    """One readable problem per field (unions report once), located by the YAML lines."""
    problems: list[RuleProblem] = []
    seen: set[YamlPath] = set()
    for error in exc.errors():
        path = tuple(p for p in error["loc"] if not (isinstance(p, str) and p in _UNION_MEMBERS))
        if path in seen:
            continue
        seen.add(path)
        field = ".".join(str(p) for p in path) or "file"
        reason = _reason(error, model, path)
        line = line_of(lines, (*base, *path))
        problems.append(RuleProblem(SourceLocation(file, line), f"{label}{field}: {reason}"))
    return problems


def _reason(error: Any, model: type[BaseModel], path: YamlPath) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        known = list(model.model_fields) if len(path) == 1 else []
        close = difflib.get_close_matches(str(path[-1]), known, n=1)
        return "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required field is missing"
    if kind == "string_type":
        return "expected text, " + describe(value)
    if kind == "bool_type":
        return f"expected true or false, {describe(value)} (yes/no/on/off are text in rule files)"
    if kind in ("int_type", "int_parsing", "int_from_float", "float_type"):
        return "expected a number, " + describe(value)
    if kind == "too_long" and isinstance(value, dict):
        return f"at most {ctx.get('max_length')} keys, found {len(value)}"
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters, found {len(value)}"
    if kind == "string_pattern_mismatch":
        return f"{value!r} must start with a letter and use only letters, digits, _ . -"
    if kind == "too_short":
        return "must not be empty"
    if kind in ("dict_type", "model_type"):
        return "expected a mapping (key: value), " + describe(value)
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}, {describe(value)}"
    if kind == "list_type":
        return "expected a list, " + describe(value)
    return str(error["msg"])


def describe(value: Any) -> str:
    """What the operator wrote, said so that the fix is obvious."""
    if isinstance(value, bool):
        return f"got the boolean {str(value).lower()} (quote it if you mean the text)"
    if isinstance(value, int | float):
        return f"got the number {value} (quote it if you mean the text)"
    if isinstance(value, str):
        return f"got the text {value!r}"
    if value is None:
        return "got nothing (null)"
    return f"got a {type(value).__name__}"
