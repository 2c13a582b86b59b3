"""The `tests:` section of a rule file: cases an operator writes next to the rules they test.

```yaml
tests:
  - name: big single-family home gets photos and a 3D tour
    trigger: vacant_ready
    property: {status: Vacant Unrented Ready, property_type: single_family, bedrooms: 4}
    now: 2026-11-27T18:00:00Z          # optional: the decision time, for date conditions
    expect:
      rule: sfr-full-marketing          # optional
      services: [{slug: photos, quantity: 25}, {slug: zillow_3d_and_floor_plans, quantity: 1}]
  - name: occupied homes order nothing
    trigger: vacant_ready
    property: {status: Occupied}
    expect: {no_order: true}
```
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError

from propready.adapters.rule_yaml import RuleProblem, YamlPath, line_of
from propready.adapters.rulefile_models import TestModel, validation_problems
from propready.core.catalog import Catalog
from propready.core.expressions import Expression, SourceLocation
from propready.core.model import ServiceLine
from propready.core.rules import RuleTest


def build_tests(
    raw_tests: list[Any],
    file: str,
    lines: dict[YamlPath, int],
    triggers: Mapping[str, Expression],
    rule_ids: Collection[str],
    catalog: Catalog,
    known_fields: Collection[str] | None,
) -> tuple[list[RuleTest], list[RuleProblem]]:
    """Typed test cases, and every problem with them (unknown trigger, rule, slug or field)."""
    tests: list[RuleTest] = []
    problems: list[RuleProblem] = []
    for index, raw in enumerate(raw_tests):
        base: YamlPath = ("tests", index)
        name = raw.get("name") if isinstance(raw, dict) else None
        label = f"test {name!r}: " if isinstance(name, str) else f"tests[{index}]: "
        try:
            model = TestModel.model_validate(raw)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, TestModel, file, lines, base, label))
            continue

        def at(*path: str | int, base: YamlPath = base) -> SourceLocation:
            return SourceLocation(file, line_of(lines, (*base, *path)))

        found: list[str] = []
        if model.trigger not in triggers:
            found.append(f"unknown trigger {model.trigger!r}")
            problems.append(RuleProblem(at("trigger"), label + found[-1]))
        expect = model.expect
        if expect.no_order and (expect.rule is not None or expect.services):
            found.append("no_order cannot be combined with rule or services")
            problems.append(RuleProblem(at("expect"), label + found[-1]))
        if not expect.no_order and expect.rule is None and expect.services is None:
            found.append("expect needs rule, services or no_order: true")
            problems.append(RuleProblem(at("expect"), label + found[-1]))
        if expect.rule is not None and expect.rule not in rule_ids:
            found.append(f"expects unknown rule {expect.rule!r}")
            problems.append(RuleProblem(at("expect", "rule"), label + found[-1]))
        services: list[ServiceLine] = []
        for position, service in enumerate(expect.services or []):
            where = at("expect", "services", position)
            if catalog.get(service.slug) is None:
                found.append(f"service {service.slug!r} is not in the catalog")
                problems.append(RuleProblem(where, label + found[-1]))
            quantity = service.quantity
            if not isinstance(quantity, int) or isinstance(quantity, bool):
                found.append(f"expected quantity of {service.slug} must be a whole number")
                problems.append(RuleProblem(where, label + found[-1]))
                continue
            services.append(ServiceLine(service.slug, quantity))
        if known_fields is not None:
            for fact in model.property:
                if fact not in known_fields:
                    found.append(f"property field {fact!r} is not returned by the source query")
                    problems.append(RuleProblem(at("property", fact), label + found[-1]))
        if model.now is not None and model.now.tzinfo is None:
            found.append("now needs a time zone (for example 2026-11-27T18:00:00Z)")
            problems.append(RuleProblem(at("now"), label + found[-1]))
        if found:
            continue
        tests.append(
            RuleTest(
                name=model.name,
                trigger=model.trigger,
                facts=dict(model.property),
                location=at(),
                now=model.now,
                expect_rule=expect.rule,
                expect_services=tuple(services) if expect.services is not None else None,
                expect_no_order=expect.no_order,
            )
        )
    return tests, problems
