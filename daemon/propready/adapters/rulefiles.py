"""Rule files on disk: YAML (strings stay strings) with CEL, validated with file and line.

Loading reports every problem it finds, each as `file:line: reason`, and refuses the whole set
if there is any: a rule set is used only when all of it is valid. When the source query's column
names are known (`known_fields`), every `property.NAME` an expression reads must be one of them.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import stat
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from propready.adapters.rule_yaml import RuleFileError, RuleProblem, YamlPath, line_of, read_yaml
from propready.adapters.rulefile_budgets import build_budgets
from propready.adapters.rulefile_models import (
    FileModel,
    RuleModel,
    ServiceModel,
    describe,
    validation_problems,
)
from propready.adapters.rulefile_tests import build_tests
from propready.core.budgets import Budget
from propready.core.catalog import Catalog
from propready.core.expressions import (
    Expression,
    ExpressionError,
    SourceLocation,
    compile_expression,
    unknown_fields,
)
from propready.core.rules import Rule, RuleSet, RuleTest, ServiceSpec

__all__ = [
    "RuleFileError",
    "RuleProblem",
    "load_rule_set",
    "parse_rule_files",
    "rule_files_in",
    "rules_version",
]

_TRIGGER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_]{1,60}$")
_ACCESS_METHODS = frozenset({"lockbox_code", "keypad", "rently", "no_access_needed"})
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


class _Checker:
    """Collects problems for one rule set, with the file and line of each."""

    def __init__(self, catalog: Catalog, known_fields: Collection[str] | None) -> None:
        self.catalog = catalog
        self.known_fields = frozenset(known_fields) if known_fields is not None else None
        self.problems: list[RuleProblem] = []

    def add(self, location: SourceLocation, reason: str) -> None:
        self.problems.append(RuleProblem(location, reason))

    def compile(self, source: str, location: SourceLocation, label: str) -> Expression | None:
        """Compile a CEL expression; report syntax errors, unknown variables and fields."""
        try:
            expression = compile_expression(source, location)
        except ExpressionError as exc:
            self.add(exc.location, f"{label}: {exc.message}")
            return None
        if self.known_fields is not None:
            for reference in unknown_fields(expression, self.known_fields):
                self.add(
                    reference.location,
                    f"{label}: unknown field property.{reference.name} "
                    f"(the source query does not return it{self._closest(reference.name)})",
                )
        return expression

    def _closest(self, name: str) -> str:
        close = difflib.get_close_matches(name, sorted(self.known_fields or ()), n=1)
        return f"; did you mean {close[0]!r}?" if close else ""

    def validate(
        self,
        model: type[BaseModel],
        data: Any,
        file: str,
        lines: dict[YamlPath, int],
        base: YamlPath,
        label: str,
    ) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.problems.extend(validation_problems(exc, model, file, lines, base, label))
            return None


# Far above any real rule set (the shipped examples are a few kilobytes each), far below what
# could hurt the daemon: what a file may hold is bounded before it is parsed.
MAX_RULE_FILE_BYTES = 512 * 1024
MAX_RULE_SET_BYTES = 4 * 1024 * 1024
MAX_RULE_FILES = 200


def rule_files_in(path: Path) -> list[Path]:
    """The rule files at `path`: the path itself unless it is a folder, else its *.yaml files.

    A regular file counts only with a .yaml or .yml name. Anything else that is not a folder (a
    device or a FIFO given by mistake) is returned, so the reader refuses it rather than it being
    mistaken for an empty folder.
    """
    if path.exists() and not path.is_dir():
        if path.is_file():
            return [path] if path.suffix in (".yaml", ".yml") else []
        return [path]
    return sorted(p for p in path.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def read_rule_source(file: Path, limit: int = MAX_RULE_FILE_BYTES) -> str:
    """The text of one rule file; RuleFileError unless it is a regular file of at most `limit`
    bytes of UTF-8.

    Opened without blocking and checked on the open descriptor, so a FIFO (which would block
    the reader forever), a device such as /dev/zero (endless) or a symlink to either is refused,
    and at most `limit` + 1 bytes are ever read, whatever the file claims to be.
    """
    where = SourceLocation(str(file), 0)
    try:
        descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise RuleFileError([RuleProblem(where, f"cannot read: {exc.strerror}")]) from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise RuleFileError(
                [RuleProblem(where, "not a regular file (a device, FIFO or socket); refused")]
            )
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise RuleFileError(
            [RuleProblem(where, f"larger than {limit:,} bytes; rule files are refused above that")]
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleFileError(
            [RuleProblem(where, f"cannot read: not UTF-8 ({exc.reason})")]
        ) from None


def load_rule_set(
    path: Path, catalog: Catalog, known_fields: Collection[str] | None = None
) -> RuleSet:
    """Load every rule file under `path`; raise RuleFileError listing every problem."""
    files = rule_files_in(path)
    if not files:
        if not path.exists():
            reason = f"rules.path: {path} does not exist"
        elif path.is_dir():
            reason = f"rules.path: no *.yaml rule files in {path}"
        else:
            reason = f"rules.path: {path} is not a .yaml rule file or a folder of them"
        raise RuleFileError([RuleProblem(SourceLocation(str(path), 0), reason)])
    if len(files) > MAX_RULE_FILES:
        raise RuleFileError(
            [
                RuleProblem(
                    SourceLocation(str(path), 0),
                    f"{len(files)} rule files (at most {MAX_RULE_FILES})",
                )
            ]
        )
    sources = []
    remaining = MAX_RULE_SET_BYTES
    for file in files:
        text = read_rule_source(file, min(MAX_RULE_FILE_BYTES, remaining))
        remaining -= len(text.encode("utf-8"))
        if remaining <= 0:
            raise RuleFileError(
                [
                    RuleProblem(
                        SourceLocation(str(file), 0),
                        f"the rule files together are larger than {MAX_RULE_SET_BYTES:,} bytes",
                    )
                ]
            )
        sources.append((str(file), text))
    return parse_rule_files(sources, catalog, known_fields)


def parse_rule_files(
    sources: Iterable[tuple[str, str]],
    catalog: Catalog,
    known_fields: Collection[str] | None = None,
) -> RuleSet:
    """Build a rule set from (file name, text) pairs; raise RuleFileError listing every problem."""
    sources = list(sources)
    checker = _Checker(catalog, known_fields)
    triggers: dict[str, Expression] = {}
    parsed: list[tuple[str, FileModel, dict[YamlPath, int]]] = []
    for file, text in sources:
        try:
            data, lines = read_yaml(text, file)
        except RuleFileError as exc:
            checker.problems.extend(exc.problems)
            continue
        if data is None:
            data = {}
        if not isinstance(data, dict):
            checker.add(
                SourceLocation(file, line_of(lines, ())),
                "expected a mapping with triggers, rules and tests, " + describe(data),
            )
            continue
        model = checker.validate(FileModel, data, file, lines, (), "")
        if model is None:
            continue
        parsed.append((file, model, lines))
        _add_triggers(checker, model, file, lines, triggers)
    policies = {m.hit_policy for _, m, _ in parsed if m.hit_policy}
    if len(policies) > 1:
        checker.add(SourceLocation(sources[0][0], 1), "rule files disagree on hit_policy")
    rules: list[Rule] = []
    first_seen: dict[str, SourceLocation] = {}
    for file, model, lines in parsed:
        for index, raw in enumerate(model.rules):
            base: YamlPath = ("rules", index)
            label = _rule_label(raw, index)
            rule_model = checker.validate(RuleModel, raw, file, lines, base, label)
            if rule_model is None:
                # Check the fields that did validate too, so every problem of the rule is
                # reported at once (an unknown trigger next to a misspelt key, say).
                partial = _partial_rule(raw, index)
                if partial is not None:
                    _build_rule(checker, partial, file, lines, base, triggers)
                continue
            where = SourceLocation(file, line_of(lines, (*base, "id")))
            if rule_model.id in first_seen:
                first = first_seen[rule_model.id]
                checker.add(where, f"rule id {rule_model.id!r} is used twice (first at {first})")
            first_seen.setdefault(rule_model.id, where)
            rule = _build_rule(checker, rule_model, file, lines, base, triggers)
            if rule is not None:
                rules.append(rule)
    tests: list[RuleTest] = []
    for file, model, lines in parsed:
        built, problems = build_tests(
            model.tests, file, lines, triggers, set(first_seen), checker.catalog, known_fields
        )
        tests.extend(built)
        checker.problems.extend(problems)
    budgets: list[Budget] = []
    budget_names: dict[str, SourceLocation] = {}
    for file, model, lines in parsed:
        built_budgets, problems = build_budgets(model.budgets, file, lines, budget_names)
        budgets.extend(built_budgets)
        checker.problems.extend(problems)
    if checker.problems:
        raise RuleFileError(checker.problems)
    policy: Literal["first", "collect"] = "collect" if policies == {"collect"} else "first"
    return RuleSet(
        triggers, tuple(rules), rules_version(sources), policy, tuple(tests), tuple(budgets)
    )


def rules_version(sources: Iterable[tuple[str, str]]) -> str:
    """A content hash of the rule files (names and text), recorded with every decision."""
    digest = hashlib.sha256()
    for file, text in sorted(sources):
        digest.update(Path(file).name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


def _partial_rule(raw: Any, index: int) -> RuleModel | None:
    """The rule's valid fields as a model (the invalid ones left at their defaults), or None."""
    if not isinstance(raw, dict):
        return None
    try:
        RuleModel.model_validate(raw)
    except ValidationError as exc:
        bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
    else:
        return None
    kept = {k: v for k, v in raw.items() if k in RuleModel.model_fields and k not in bad}
    values: dict[str, Any] = {"id": f"rules[{index}]", "triggered_by": [], "services": [], **kept}
    values["services"] = [ServiceModel.model_validate(item) for item in values["services"]]
    return RuleModel.model_construct(**values)


def _rule_label(raw: Any, index: int) -> str:
    rule_id = raw.get("id") if isinstance(raw, dict) else None
    return f"rule {rule_id!r}: " if isinstance(rule_id, str) else f"rules[{index}]: "


def _add_triggers(
    checker: _Checker,
    model: FileModel,
    file: str,
    lines: dict[YamlPath, int],
    triggers: dict[str, Expression],
) -> None:
    for name, source in model.triggers.items():
        location = SourceLocation(file, line_of(lines, ("triggers", name)))
        if not isinstance(name, str) or not _TRIGGER_NAME.match(name):
            checker.add(
                location,
                f"trigger name {name!r} must start with a letter and use only letters, "
                "digits and _",
            )
            continue
        if not isinstance(source, str):
            checker.add(location, f"trigger {name!r}: expected a CEL condition, {describe(source)}")
            continue
        if not source.strip():
            checker.add(location, f"trigger {name!r}: the condition is empty")
            continue
        if name in triggers:
            checker.add(
                location, f"trigger {name!r} is defined twice (also at {triggers[name].location})"
            )
            continue
        expression = checker.compile(source, location, f"trigger {name!r}")
        if expression is not None:
            triggers[name] = expression


def _build_rule(
    checker: _Checker,
    raw: RuleModel,
    file: str,
    lines: dict[YamlPath, int],
    base: YamlPath,
    triggers: dict[str, Expression],
) -> Rule | None:
    def at(*path: str | int) -> SourceLocation:
        return SourceLocation(file, line_of(lines, (*base, *path)))

    before = len(checker.problems)
    label = f"rule {raw.id!r}"
    for position, name in enumerate(raw.triggered_by):
        if name not in triggers:
            known = ", ".join(sorted(triggers)) or "none defined"
            checker.add(
                at("triggered_by", position), f"{label}: unknown trigger {name!r} (known: {known})"
            )
    when = None
    if raw.when is not None and not raw.when.strip():
        # An empty condition would hold for every home: almost certainly not what was meant.
        checker.add(
            at("when"),
            f"{label}: when is empty; write a condition, or leave `when` out for a rule that "
            "orders every time its triggers fire",
        )
    elif raw.when is not None:
        when = checker.compile(raw.when, at("when"), f"{label}: when")
    services = _services(checker, raw, at, label)
    for key, value in raw.metadata.items():
        if not _METADATA_KEY.match(key):
            checker.add(
                at("metadata", key),
                f"{label}: metadata key {key!r} must be 1-60 characters of A-Z, a-z, 0-9 and _",
            )
        if len(value) > 255:
            checker.add(
                at("metadata", key),
                f"{label}: metadata value of {key!r} is longer than 255 characters ({len(value)})",
            )
    _check_access(checker, raw, at, label)
    if len(checker.problems) > before:
        return None
    return Rule(
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
        allow_unpriced=raw.allow_unpriced,
        on_vendor_cancel=raw.on_vendor_cancel,
    )


def _services(checker: _Checker, raw: RuleModel, at: Any, label: str) -> list[ServiceSpec]:
    services: list[ServiceSpec] = []
    seen: set[str] = set()
    for position, service in enumerate(raw.services):
        where = at("services", position)
        entry = checker.catalog.get(service.slug)
        if service.slug in seen:
            checker.add(where, f"{label}: service {service.slug!r} is listed twice")
        seen.add(service.slug)
        if entry is None:
            known = ", ".join(sorted(checker.catalog.services))
            checker.add(
                where, f"{label}: service {service.slug!r} is not in the catalog (known: {known})"
            )
            continue
        if checker.known_fields is not None:
            for required in entry.required_fields:
                if required not in checker.known_fields:
                    checker.add(
                        where,
                        f"{label}: {service.slug} needs the field {required!r}, which the "
                        "source query does not return",
                    )
        quantity = service.quantity
        if isinstance(quantity, int) and not isinstance(quantity, bool):
            if not entry.accepts_quantity(quantity):
                allowed = ", ".join(map(str, sorted(entry.quantities))) or "any positive integer"
                checker.add(
                    where,
                    f"{label}: {service.slug} does not accept quantity {quantity} "
                    f"(allowed: {allowed})",
                )
            services.append(ServiceSpec(service.slug, quantity))
        elif isinstance(quantity, str):
            expression = checker.compile(quantity, where, f"{label}: quantity of {service.slug}")
            if expression is not None:
                services.append(ServiceSpec(service.slug, expression))
        else:
            checker.add(
                where,
                f"{label}: quantity of {service.slug} must be a whole number or a quoted CEL "
                f"expression, {describe(quantity)}",
            )
    return services


def _check_access(checker: _Checker, raw: RuleModel, at: Any, label: str) -> None:
    for key, value in raw.property_access.items():
        where = at("property_access", key)
        if key not in _ACCESS_KEYS:
            known = ", ".join(sorted(_ACCESS_KEYS))
            checker.add(where, f"{label}: unknown property_access field {key!r} (known: {known})")
        elif key == "vacant":
            if not isinstance(value, bool):
                checker.add(
                    where,
                    f"{label}: property_access.vacant must be true or false, {describe(value)}",
                )
        elif not isinstance(value, str):
            checker.add(where, f"{label}: property_access.{key}: expected text, {describe(value)}")
        elif key == "method_of_access" and value not in _ACCESS_METHODS:
            known = ", ".join(sorted(_ACCESS_METHODS))
            checker.add(
                where, f"{label}: property_access.method_of_access {value!r} is not one of {known}"
            )
