"""Budgets under a real race: 20 OS processes want the last slot of a budget at once."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from propready.adapters.store import audit, outbox
from propready.adapters.store import budgets as budget_store
from propready.adapters.store.engine import create_state_engine
from propready.core.audit_kinds import AuditKind
from propready.core.budgets import Budget
from propready.core.orders import OrderState
from propready.core.planning import OrderPlan

RACERS = 20
NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
DENVER = ZoneInfo("America/Denver")
# Two shapes of "the last slot": the fifth order of one entity's month (four are placed already),
# and the last $300 of a spend budget shared by every entity (each racer is another entity).
SCENARIOS: dict[str, tuple[Budget, int]] = {
    "orders_per_entity": (Budget("five-a-month", "month", "hold", "*", max_orders=5), 4),
    "spend_all_entities": (Budget("money", "day", "hold", max_spend_cents=150_000), 4),
}


def _plan(property_id: str, entity: str) -> OrderPlan:
    return OrderPlan(
        external_order_id=f"pr-{property_id}",
        external_property_id=property_id,
        billing_entity_slug=entity,
        payload={"external_property_id": property_id},
        window_hours=72,
        requires_approval=False,
        estimated_price_cents=30_000,
    )


def _entity(scenario: str, index: int) -> str:
    return "entity_1" if scenario == "orders_per_entity" else f"entity_{index}"


def _decide(engine: sa.Engine, plan: OrderPlan, budget: Budget) -> str:
    """What decide.handle_edge does for one plan: verdict, insert, audit, in one transaction."""
    with engine.begin() as connection:
        verdict = budget_store.check_and_lock(connection, plan, [budget], NOW, DENVER)
        held = verdict.outcome == "hold"
        inserted = outbox.insert_order_in_window(
            connection,
            plan,
            event_id=None,
            rule_id="race",
            rules_version="v",
            state=OrderState.AWAITING_APPROVAL if held else OrderState.PLANNED,
            now=NOW,
            budget_day=verdict.day,
            held_by_budget=verdict.held_by_budget,
        )
        assert isinstance(inserted, outbox.OrderInserted)
        audit.record(
            connection,
            AuditKind.ORDER_CREATED,
            NOW,
            order_id=inserted.order_id,
            external_order_id=plan.external_order_id,
            detail=verdict.detail(),
        )
    return verdict.outcome


def _racer(url: str, scenario: str, index: int, barrier: Any, results: Any) -> None:
    budget, _ = SCENARIOS[scenario]
    engine = create_state_engine(url)
    try:
        plan = _plan(f"RACE-{index}", _entity(scenario, index))
        barrier.wait(timeout=60)
        results.put((index, _decide(engine, plan, budget)))
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_twenty_processes_race_for_the_last_budget_slot(state_url: str, scenario: str) -> None:
    """Four orders use four of five slots; of 20 racing processes exactly one is admitted, the
    other 19 are held naming the budget, and the budget ends exactly full."""
    budget, existing = SCENARIOS[scenario]
    engine = create_state_engine(state_url)
    try:
        for n in range(existing):
            assert (
                _decide(engine, _plan(f"EARLIER-{n}", _entity(scenario, 100 + n)), budget) == "ok"
            )
    finally:
        engine.dispose()
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited sockets
    barrier = context.Barrier(RACERS)
    results = context.Queue()
    processes = [
        context.Process(target=_racer, args=(state_url, scenario, i, barrier, results))
        for i in range(RACERS)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120)[1] for _ in range(RACERS)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    results.close()
    results.join_thread()
    assert sorted(outcomes) == ["hold"] * (RACERS - 1) + ["ok"]
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            usage = budget_store.usage_now(connection, [budget], NOW.astimezone(DENVER).date())
            held = outbox.list_orders(connection, state=OrderState.AWAITING_APPROVAL.value)
    finally:
        engine.dispose()
    scope = "entity_1" if scenario == "orders_per_entity" else "*"
    (used,) = [u for (s, _), u in usage.items() if s == scope]
    assert used.orders == existing + 1
    assert used.spend_cents == (existing + 1) * 30_000
    assert {o.held_by_budget for o in held} == {budget.name}
