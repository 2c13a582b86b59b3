"""The `budgets:` section of a rule file: caps on orders and spend per period (core/budgets.py).

```yaml
budgets:
  - name: per-entity-month          # optional; named in the audit log, explain and approvals
    billing_entity_slug: "*"        # "*": each entity its own budget; omit: all entities together
    period: month                   # day | week | month, in [source] timezone
    max_orders: 200                 # and/or
    max_spend_usd: 40000            # dollars, at most two decimals
    when_exceeded: hold             # hold (default) | skip
```
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from propready.adapters.rule_yaml import RuleProblem, YamlPath, line_of
from propready.adapters.rulefile_models import IDENTIFIER, validation_problems
from propready.core.budgets import EACH_ENTITY, Budget
from propready.core.expressions import SourceLocation


class BudgetModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = Field(default=None, pattern=IDENTIFIER)
    billing_entity_slug: StrictStr | None = Field(default=None, min_length=1, max_length=255)
    period: Literal["day", "week", "month"]
    max_orders: StrictInt | None = Field(default=None, ge=0)
    max_spend_usd: StrictInt | StrictFloat | None = Field(default=None, ge=0)
    when_exceeded: Literal["hold", "skip"] = "hold"


def default_name(model: BudgetModel) -> str:
    """`per-entity-month`, `all-entities-day`, or `<entity>-week` when the file names none."""
    who = {None: "all-entities", EACH_ENTITY: "per-entity"}.get(
        model.billing_entity_slug, str(model.billing_entity_slug)
    )
    return f"{who}-{model.period}"


def build_budgets(
    raw_budgets: list[Any],
    file: str,
    lines: dict[YamlPath, int],
    seen: dict[str, SourceLocation],
) -> tuple[list[Budget], list[RuleProblem]]:
    """Typed budgets of one file, and every problem with them; `seen` spans all the files."""
    budgets: list[Budget] = []
    problems: list[RuleProblem] = []
    for index, raw in enumerate(raw_budgets):
        base: YamlPath = ("budgets", index)
        label = f"budgets[{index}]: "
        where = SourceLocation(file, line_of(lines, base))
        try:
            model = BudgetModel.model_validate(raw)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, BudgetModel, file, lines, base, label))
            continue
        name = model.name or default_name(model)
        label = f"budget {name!r}: "
        found: list[str] = []
        if model.max_orders is None and model.max_spend_usd is None:
            found.append("needs max_orders, max_spend_usd or both")
        spend_cents = None
        if model.max_spend_usd is not None:
            cents = Decimal(str(model.max_spend_usd)) * 100
            if cents != cents.to_integral_value():
                found.append(f"max_spend_usd {model.max_spend_usd} has more than two decimals")
            spend_cents = int(cents)
        if name in seen:
            found.append(
                f"the name is used twice (first at {seen[name]}); give each budget its own name"
            )
        seen.setdefault(name, where)
        problems.extend(RuleProblem(where, label + reason) for reason in found)
        if found:
            continue
        budgets.append(
            Budget(
                name=name,
                period=model.period,
                when_exceeded=model.when_exceeded,
                billing_entity_slug=model.billing_entity_slug,
                max_orders=model.max_orders,
                max_spend_cents=spend_cents,
                location=where,
            )
        )
    return budgets, problems
