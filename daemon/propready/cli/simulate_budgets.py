"""`propready simulate`'s budget column: which homes a budget, or a missing price, would hold.

The homes are taken in the order the source returns them, each would-be order counting against
the budgets as if the daemon decided them one after another now, starting from what the state
database holds in the current periods (read only; from zero when it cannot be read).
"""

from __future__ import annotations

from datetime import date, datetime

import click
import sqlalchemy as sa

from propready.adapters.store import budgets as budget_store
from propready.adapters.store.engine import create_state_engine
from propready.core.budgets import BudgetSimulation, Usage, local_day
from propready.core.catalog import Catalog
from propready.core.model import PropertySnapshot
from propready.core.pricing import estimate_price
from propready.core.rules import RuleSet
from propready.core.simulation import Outcome
from propready.settings import Settings


class BudgetColumn:
    """Says, per home that would be ordered, whether a budget or a missing price holds it."""

    def __init__(self, settings: Settings, rules: RuleSet, catalog: Catalog, now: datetime):
        self.catalog = catalog
        zone = settings.source.zone
        day = local_day(now, zone)
        self.simulation = (
            BudgetSimulation(rules.budgets, day, zone, _usage(settings, rules, day))
            if rules.budgets
            else None
        )

    def note(self, outcome: Outcome, snapshot: PropertySnapshot) -> str:
        decision = outcome.decision
        if decision is None or not outcome.orders:
            return ""
        entity = decision.billing_entity_slug or str(snapshot.facts.get("billing_entity_slug"))
        price = estimate_price(outcome.services, self.catalog)
        if self.simulation is not None:
            verdict = self.simulation.admit(entity, price.cents)
            if verdict.budget is not None:
                return f"{verdict.outcome}: budget {verdict.budget.name}"
        if price.unpriced and not decision.allow_unpriced:
            return f"hold: no price for {', '.join(price.unpriced)}"
        return ""


def _usage(settings: Settings, rules: RuleSet, day: date) -> dict[tuple[str, str], Usage]:
    try:
        engine = create_state_engine(settings.state.url)
        try:
            with engine.connect() as connection:
                return budget_store.usage_now(connection, rules.budgets, day)
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(
            f"budgets: this period's orders not read from the state database ({first}); "
            "counting from zero",
            err=True,
        )
        return {}
