"""Rule files on disk: YAML (strings stay strings) with CEL, validated with file and line.

Loading reports every problem it finds, each as `file:line: reason`, and refuses the whole set
if there is any: a rule set is used only when all of it is valid.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from propready.core.catalog import Catalog
from propready.core.expressions import (
    Expression,
    ExpressionError,
    SourceLocation,
    compile_expression,
)
from propready.core.rules import Rule, RuleSet, ServiceSpec

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class RuleProblem:
    location: SourceLocation
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


class RuleFileError(ValueError):
    """The rule files cannot be used; `problems` lists every one found."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _StringKeepingLoader(yaml.SafeLoader):
    """YAML with 1.2 scalars: only true/false are booleans, no octal, no `on`/`no` surprises."""


_StringKeepingLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StringKeepingLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_OCTAL_OR_SEXAGESIMAL = re.compile(r"^[-+]?(0[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])+)$")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | str:
    text = loader.construct_scalar(node)
    if _OCTAL_OR_SEXAGESIMAL.match(text):
        return text  # YAML 1.1 would read 0777 as 511 and 1:30 as 90
    return int(text.replace("_", ""), 0)


_StringKeepingLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _read_yaml(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML keeping the line of every key and item; refuse duplicate keys."""
    loader = _StringKeepingLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        return _to_python(loader, node, (), lines, file), lines
    finally:
        loader.dispose()


def _to_python(
    loader: yaml.SafeLoader, node: yaml.Node | None, path: Path_, lines: dict[Path_, int], file: str
) -> Any:
    if node is None:
        return None
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            if key in result:
                raise RuleFileError(
                    [
                        RuleProblem(
                            SourceLocation(file, key_node.start_mark.line + 1),
                            f"duplicate key {key!r}",
                        )
                    ]
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _to_python(loader, value_node, (*path, key), lines, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_python(loader, item, (*path, index), lines, file)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node)


_IDENT = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"


class _ServiceModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: StrictStr
    quantity: StrictInt | StrictStr = 1


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr = Field(pattern=_IDENT)
    triggered_by: list[StrictStr] = Field(min_length=1)
    when: StrictStr | None = None
    services: list[_ServiceModel] = Field(min_length=1)
    billing_entity_slug: StrictStr | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict, max_length=4)
    order_notes: StrictStr | None = Field(default=None, max_length=1000)
    property_access: dict[StrictStr, StrictStr | StrictBool] = Field(default_factory=dict)
    duplicate_window_hours: StrictInt | float | None = Field(default=None, ge=0)
    priority: StrictInt = 0
    enabled: StrictBool = True
    requires_approval: StrictBool = False


class _RuleFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hit_policy: Literal["first", "collect"] | None = None
    triggers: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    rules: list[_RuleModel] = Field(default_factory=list)
    tests: list[dict[str, Any]] = Field(default_factory=list)  # run by `rules test` (later issue)


_METADATA_KEY = re.compile(r"^[A-Za-z0-9_]{1,60}$")
_ACCESS_KEYS = frozenset(
    {
        "vacant",
        "method_of_access",
        "access_code",
        "lockbox_location",
        "onsite_contact_name",
        "onsite_contact_phone",
        "onsite_contact_email",
        "preferred_date",
    }
)


def rule_files_in(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_rule_set(path: Path, catalog: Catalog) -> RuleSet:
    """Load every rule file under `path`; raise RuleFileError listing every problem."""
    files = rule_files_in(path)
    if not files:
        raise RuleFileError(
            [RuleProblem(SourceLocation(str(path), 0), "no *.yaml rule files here")]
        )
    return parse_rule_files([(str(f), f.read_text("utf-8")) for f in files], catalog)


def parse_rule_files(sources: Iterable[tuple[str, str]], catalog: Catalog) -> RuleSet:
    sources = list(sources)
    problems: list[RuleProblem] = []
    triggers: dict[str, Expression] = {}
    rules: list[Rule] = []
    rule_lines: dict[str, SourceLocation] = {}
    policies: set[str] = set()
    parsed: list[tuple[str, _RuleFileModel, dict[Path_, int]]] = []
    for file, text in sources:
        try:
            data, lines = _read_yaml(text, file)
        except RuleFileError as exc:
            problems.extend(exc.problems)
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 0
            problems.append(
                RuleProblem(
                    SourceLocation(file, line), f"not valid YAML: {getattr(exc, 'problem', exc)}"
                )
            )
            continue
        if data is None:
            data = {}
        try:
            model = _RuleFileModel.model_validate(data)
        except ValidationError as exc:
            problems.extend(_validation_problems(exc, file, lines))
            continue
        if model.hit_policy:
            policies.add(model.hit_policy)
        parsed.append((file, model, lines))
        for name, source in model.triggers.items():
            location = SourceLocation(file, lines.get(("triggers", name), 0))
            if name in triggers:
                problems.append(
                    RuleProblem(
                        location,
                        f"trigger {name!r} is defined twice (also at {triggers[name].location})",
                    )
                )
                continue
            try:
                triggers[name] = compile_expression(source, location)
            except ExpressionError as exc:
                problems.append(RuleProblem(exc.location, f"trigger {name!r}: {exc.message}"))
    for file, model, lines in parsed:
        for index, raw in enumerate(model.rules):
            rule, rule_problems = _build_rule(raw, file, lines, index, triggers, catalog)
            problems.extend(rule_problems)
            if raw.id in rule_lines:
                problems.append(
                    RuleProblem(
                        SourceLocation(file, lines.get(("rules", index, "id"), 0)),
                        f"rule id {raw.id!r} is used twice (first at {rule_lines[raw.id]})",
                    )
                )
            rule_lines.setdefault(raw.id, SourceLocation(file, lines.get(("rules", index), 0)))
            if rule is not None:
                rules.append(rule)
    if len(policies) > 1:
        problems.append(
            RuleProblem(SourceLocation(sources[0][0], 0), "rule files disagree on hit_policy")
        )
    if problems:
        raise RuleFileError(problems)
    policy: Literal["first", "collect"] = "collect" if policies == {"collect"} else "first"
    return RuleSet(triggers, tuple(rules), rules_version(sources), policy)


def rules_version(sources: Iterable[tuple[str, str]]) -> str:
    """A content hash of the rule files (names and text), recorded with every decision."""
    digest = hashlib.sha256()
    for file, text in sorted(sources):
        digest.update(Path(file).name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


def _build_rule(
    raw: _RuleModel,
    file: str,
    lines: dict[Path_, int],
    index: int,
    triggers: dict[str, Expression],
    catalog: Catalog,
) -> tuple[Rule | None, list[RuleProblem]]:
    def at(*path: str | int) -> SourceLocation:
        return SourceLocation(
            file, lines.get(("rules", index, *path), lines.get(("rules", index), 0))
        )

    problems: list[RuleProblem] = []
    for position, name in enumerate(raw.triggered_by):
        if name not in triggers:
            known = ", ".join(sorted(triggers)) or "none defined"
            problems.append(
                RuleProblem(
                    at("triggered_by", position),
                    f"rule {raw.id!r}: unknown trigger {name!r} (known: {known})",
                )
            )
    when: Expression | None = None
    if raw.when is not None:
        try:
            when = compile_expression(raw.when, at("when"))
        except ExpressionError as exc:
            problems.append(RuleProblem(exc.location, f"rule {raw.id!r}: when: {exc.message}"))
    services: list[ServiceSpec] = []
    for position, service in enumerate(raw.services):
        entry = catalog.get(service.slug)
        where = at("services", position)
        if entry is None:
            problems.append(
                RuleProblem(
                    where, f"rule {raw.id!r}: service {service.slug!r} is not in the catalog"
                )
            )
            continue
        if isinstance(service.quantity, int):
            if not entry.accepts_quantity(service.quantity):
                allowed = ", ".join(map(str, sorted(entry.quantities))) or "any positive integer"
                problems.append(
                    RuleProblem(
                        where,
                        f"rule {raw.id!r}: {service.slug} does not accept quantity "
                        f"{service.quantity} (allowed: {allowed})",
                    )
                )
            services.append(ServiceSpec(service.slug, service.quantity))
            continue
        try:
            services.append(ServiceSpec(service.slug, compile_expression(service.quantity, where)))
        except ExpressionError as exc:
            problems.append(RuleProblem(exc.location, f"rule {raw.id!r}: quantity: {exc.message}"))
    for key, value in raw.metadata.items():
        if not _METADATA_KEY.match(key):
            problems.append(
                RuleProblem(
                    at("metadata", key),
                    f"rule {raw.id!r}: metadata key {key!r} must be 1-60 characters "
                    "of A-Z, a-z, 0-9 and _",
                )
            )
        if len(value) > 255:
            problems.append(
                RuleProblem(
                    at("metadata", key),
                    f"rule {raw.id!r}: metadata value of {key!r} is longer than 255 characters",
                )
            )
    for key in raw.property_access:
        if key not in _ACCESS_KEYS:
            problems.append(
                RuleProblem(
                    at("property_access", key),
                    f"rule {raw.id!r}: unknown property_access field {key!r}",
                )
            )
    if problems:
        return None, problems
    rule = Rule(
        id=raw.id,
        triggered_by=tuple(raw.triggered_by),
        when=when,
        services=tuple(services),
        location=at(),
        billing_entity_slug=raw.billing_entity_slug,
        metadata=dict(raw.metadata),
        order_notes=raw.order_notes,
        property_access=dict(raw.property_access),
        duplicate_window_hours=float(raw.duplicate_window_hours)
        if raw.duplicate_window_hours is not None
        else None,
        priority=raw.priority,
        enabled=raw.enabled,
        requires_approval=raw.requires_approval,
    )
    return rule, []


def _validation_problems(
    exc: ValidationError, file: str, lines: dict[Path_, int]
) -> list[RuleProblem]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        # pydantic appends the union member it tried ("str", "int"); drop those for the line lookup.
        path = tuple(
            p
            for p in loc
            if not (
                isinstance(p, str) and p in {"str", "int", "bool", "float", "function-after[...]"}
            )
        )
        line = 0
        for cut in range(len(path), -1, -1):
            if path[:cut] in lines:
                line = lines[path[:cut]]
                break
        field = ".".join(str(p) for p in path) or "file"
        reason = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] == "missing":
            reason = "required field is missing"
        problems.append(RuleProblem(SourceLocation(file, line), f"{field}: {reason}"))
    return problems
