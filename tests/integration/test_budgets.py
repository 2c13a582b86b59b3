"""Budgets and prices in the state database, on SQLite and PostgreSQL: holds, skips, give-backs,
period boundaries in the source time zone, lowered budgets, unpriced services, approvals."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, outbox
from propready.adapters.store import budgets as budget_store
from propready.core.audit_kinds import AuditKind
from propready.core.budgets import Budget, BudgetVerdict
from propready.core.orders import FREES_WINDOW, Order, OrderState
from propready.core.planning import OrderPlan
from propready.report.story import summarise
from propready.service import run_cycle
from propready.service.operator import OrderActionError, approve
from propready.service.prices import apply_vendor_price
from propready.settings import RulesSettings, Settings
from tests.integration.cycle_support import REPO, Clock, PmDatabase, home, make_settings, wired

DENVER = ZoneInfo("America/Denver")
NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)  # 11:00 in Denver
# sfr-full-marketing orders photos x25 and the 3D tour: 17500 + 12500 cents (example prices).
FULL_MARKETING_CENTS = 30000


# --- store level: check_and_lock and the insert, as decide.handle_edge calls them -------------


def _plan(
    property_id: str, entity: str = "entity_1", cents: int = 30000, **extra: Any
) -> OrderPlan:
    return OrderPlan(
        external_order_id=f"pr-{property_id}",
        external_property_id=property_id,
        billing_entity_slug=entity,
        payload={"external_property_id": property_id},
        window_hours=72,
        requires_approval=False,
        estimated_price_cents=cents,
        **extra,
    )


def _decide(
    engine: sa.Engine, plan: OrderPlan, budgets: list[Budget], now: datetime = NOW
) -> tuple[BudgetVerdict, int | None]:
    """One order decision in its own transaction: the budget verdict, then the insert."""
    with engine.begin() as connection:
        verdict = budget_store.check_and_lock(connection, plan, budgets, now, DENVER)
        if verdict.outcome == "skip":
            return verdict, None
        held = verdict.outcome == "hold"
        inserted = outbox.insert_order_in_window(
            connection,
            plan,
            event_id=None,
            rule_id="r",
            rules_version="v",
            state=OrderState.AWAITING_APPROVAL if held else OrderState.PLANNED,
            now=now,
            budget_day=verdict.day,
            held_by_budget=verdict.held_by_budget,
        )
        assert isinstance(inserted, outbox.OrderInserted)
        return verdict, inserted.order_id


def _order(engine: sa.Engine, order_id: int) -> Order:
    with engine.connect() as connection:
        found = outbox.get_order(connection, order_id)
    assert found is not None
    return found


def test_an_order_counts_in_the_local_day_across_a_dst_midnight(state_engine: sa.Engine) -> None:
    """Day budget of 1 in Denver around 2026-03-08 (23 h): midnight local, not UTC, starts a day."""
    daily = [Budget("daily", "day", "hold", max_orders=1)]
    moments = [
        (datetime(2026, 3, 8, 6, 59, tzinfo=UTC), "ok", date(2026, 3, 7)),  # 23:59 MST, Mar 7
        (datetime(2026, 3, 8, 7, 0, tzinfo=UTC), "ok", date(2026, 3, 8)),  # 00:00 MST, Mar 8
        (datetime(2026, 3, 9, 5, 59, tzinfo=UTC), "hold", date(2026, 3, 8)),  # 23:59 MDT
        (datetime(2026, 3, 9, 6, 0, tzinfo=UTC), "ok", date(2026, 3, 9)),  # 00:00 MDT, Mar 9
    ]
    for index, (moment, expected, day) in enumerate(moments):
        verdict, order_id = _decide(state_engine, _plan(f"H{index}"), daily, moment)
        assert (verdict.outcome, verdict.day) == (expected, day), moment
        assert order_id is not None
        assert _order(state_engine, order_id).budget_day == day
    held = _decide(state_engine, _plan("H9"), daily, datetime(2026, 3, 9, 5, 59, tzinfo=UTC))[0]
    assert held.window is not None
    assert (held.window.starts_at, held.window.ends_at) == (
        datetime(2026, 3, 8, 7, tzinfo=UTC),
        datetime(2026, 3, 9, 6, tzinfo=UTC),
    )


@pytest.mark.parametrize("given_back", sorted(s.value for s in FREES_WINDOW))
def test_canceled_rejected_and_failed_orders_give_their_share_back(
    state_engine: sa.Engine, given_back: str
) -> None:
    """The budget is full; once its order ends rejected, failed or canceled, there is room again."""
    cap = [Budget("cap", "month", "hold", max_orders=1)]
    first = _decide(state_engine, _plan("H1"), cap)[1]
    assert first is not None
    assert _decide(state_engine, _plan("H2"), cap)[0].outcome == "hold"
    with state_engine.begin() as connection:
        outbox.set_outcome(connection, first, OrderState(given_back), NOW)
    assert _decide(state_engine, _plan("H3"), cap)[0].outcome == "ok"


def test_held_orders_do_not_use_the_budget(state_engine: sa.Engine) -> None:
    """Orders a budget holds were not admitted: they do not count, however many pile up."""
    cap = [Budget("cap", "day", "hold", max_orders=2)]
    outcomes = [_decide(state_engine, _plan(f"H{n}"), cap)[0].outcome for n in range(5)]
    assert outcomes == ["ok", "ok", "hold", "hold", "hold"]
    with state_engine.connect() as connection:
        usage = budget_store.usage_now(connection, cap, date(2026, 12, 2))
    assert usage[("*", "day:2026-12-02")].orders == 2


def test_a_budget_lowered_while_orders_are_in_flight(state_engine: sa.Engine) -> None:
    """Orders not yet placed count; lowering the budget below them holds new orders and leaves
    the in-flight ones alone."""
    five = [Budget("cap", "month", "hold", max_orders=5)]
    three = [Budget("cap", "month", "hold", max_orders=3)]
    ids = [_decide(state_engine, _plan(f"H{n}"), five)[1] or 0 for n in range(4)]
    with state_engine.begin() as connection:  # in flight: sending, unknown, planned, planned
        outbox.set_outcome(connection, ids[0], OrderState.SENDING, NOW)
        outbox.set_outcome(connection, ids[1], OrderState.UNKNOWN, NOW)
    lowered, _ = _decide(state_engine, _plan("H5"), three)
    assert lowered.outcome == "hold"
    assert "4 of 3 orders used" in lowered.reason
    states = [_order(state_engine, i).state for i in ids]
    assert states == [
        OrderState.SENDING,
        OrderState.UNKNOWN,
        OrderState.PLANNED,
        OrderState.PLANNED,
    ]


def test_a_lowered_budget_waits_for_an_order_still_being_decided(state_engine: sa.Engine) -> None:
    """A transaction still inserting under the old budget holds the lock; the check under the
    lowered budget waits for its commit and then counts its order."""
    five = [Budget("cap", "month", "hold", max_orders=5)]
    three = [Budget("cap", "month", "hold", max_orders=3)]
    for n in range(2):
        _decide(state_engine, _plan(f"H{n}"), five)
    seen: dict[str, BudgetVerdict] = {}
    with state_engine.connect() as first:
        transaction = first.begin()
        assert budget_store.check_and_lock(first, _plan("H2"), five, NOW, DENVER).outcome == "ok"
        outbox.insert_order(
            first, _plan("H2"), event_id=None, rule_id="r", rules_version="v",
            state=OrderState.PLANNED, now=NOW, budget_day=date(2026, 12, 2),
        )  # fmt: skip

        def lowered() -> None:
            with state_engine.begin() as connection:
                seen["v"] = budget_store.check_and_lock(connection, _plan("H3"), three, NOW, DENVER)

        waiter = threading.Thread(target=lowered)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive(), "the second check did not wait for the budget lock"
        transaction.commit()
    waiter.join(timeout=30)
    assert seen["v"].outcome == "hold"
    assert seen["v"].usage is not None
    assert seen["v"].usage.orders == 3


def test_one_transaction_counts_its_own_orders_but_not_the_refused_ones(
    state_engine: sa.Engine,
) -> None:
    """Several plans in one transaction (a poll batch): the orders inserted use the budget, a
    plan the duplicate window refused after its budget check does not."""
    cap = [Budget("cap", "day", "hold", max_orders=2)]
    outcomes = []
    with state_engine.begin() as connection:
        for home_id, external in (("H1", "a"), ("H1", "b"), ("H2", "c"), ("H3", "d")):
            plan = replace(_plan(home_id), external_order_id=external)
            verdict = budget_store.check_and_lock(connection, plan, cap, NOW, DENVER)
            held = verdict.outcome == "hold"
            inserted = outbox.insert_order_in_window(
                connection, plan, event_id=None, rule_id="r", rules_version="v",
                state=OrderState.AWAITING_APPROVAL if held else OrderState.PLANNED,
                now=NOW, budget_day=verdict.day, held_by_budget=verdict.held_by_budget,
            )  # fmt: skip
            outcomes.append((verdict.outcome, type(inserted).__name__))
    assert outcomes == [
        ("ok", "OrderInserted"),
        ("ok", "WindowTaken"),  # checked, then refused as a duplicate of "a": not counted
        ("ok", "OrderInserted"),
        ("hold", "OrderInserted"),
    ]


def test_a_batch_can_lock_all_its_budget_rows_up_front(state_engine: sa.Engine) -> None:
    """lock_for_batch takes every row the batch's plans need: another writer for any of those
    entities gets its verdict only after the batch commits."""
    each = [Budget("each", "month", "hold", "*", max_orders=10)]
    plans = [_plan("H1", "entity_1"), _plan("H2", "entity_2")]
    committed = threading.Event()
    verdict_after_commit: list[bool] = []
    with state_engine.connect() as batch:
        transaction = batch.begin()
        budget_store.lock_for_batch(batch, plans, each, NOW, DENVER)

        def other() -> None:
            with state_engine.begin() as connection:
                plan = _plan("H3", "entity_2")
                budget_store.check_and_lock(connection, plan, each, NOW, DENVER)
                verdict_after_commit.append(committed.is_set())

        waiter = threading.Thread(target=other)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive(), "the other writer did not wait for the batch's locks"
        committed.set()
        transaction.commit()
    waiter.join(timeout=30)
    assert verdict_after_commit == [True]


def test_the_vendor_price_replaces_the_estimate_in_the_budget(state_engine: sa.Engine) -> None:
    """$500 a month: two $300 estimates do not fit, but the first one's reported $150 does."""
    money = [Budget("money", "month", "hold", max_spend_cents=50_000)]
    first = _decide(state_engine, _plan("H1"), money)[1]
    assert first is not None
    assert _decide(state_engine, _plan("H2"), money)[0].outcome == "hold"
    order = _order(state_engine, first)
    with state_engine.begin() as connection:
        assert apply_vendor_price(connection, order, 15_000, NOW)
        assert not apply_vendor_price(connection, order, 15_000, NOW)  # told once
        assert not apply_vendor_price(connection, order, None, NOW)
    assert _order(state_engine, first).spend_cents == 15_000
    assert _decide(state_engine, _plan("H3"), money)[0].outcome == "ok"
    with state_engine.connect() as connection:
        (reported,) = audit.query_events(connection, kinds=[AuditKind.ORDER_PRICE_REPORTED])
    assert reported["detail"]["estimated_price_cents"] == 30_000
    assert summarise(reported) == "PlanOmatic reports the price $150.00 (estimate was $300.00)"


def test_an_unpriced_service_holds_unless_the_rule_allows_it(state_engine: sa.Engine) -> None:
    """A plan with a service the catalog cannot price is held, budgets or not; the rule may
    allow it, and then it goes through."""
    unpriced = _plan("H1", unpriced_services=("twilight",), allow_unpriced=False)
    verdict, _ = _decide(state_engine, unpriced, [])
    assert (verdict.outcome, verdict.held_by_budget) == ("hold", None)
    assert verdict.reason.startswith("no price in the catalog for twilight")
    allowed = _plan("H2", unpriced_services=("twilight",), allow_unpriced=True)
    assert _decide(state_engine, allowed, [])[0].outcome == "ok"


# --- through real cycles: rule files with budgets, the sandbox, approvals ----------------------


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    """Four occupied 3-bedroom single-family homes (sfr-full-marketing: $300 each, estimated)."""
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(*(home(f"H{n}") for n in range(1, 5)))
    yield database
    database.close()


def _settings(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, tmp_path: Path, budgets: str,
    *, rule_edit: tuple[str, str] = ("", ""), catalog: str | None = None,
) -> Settings:  # fmt: skip
    """The shipped rules plus a budgets.yaml file, and maybe an operator catalog."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(REPO / "rules" / "readiness.yaml", rules)
    if rule_edit[0]:
        text = (rules / "readiness.yaml").read_text()
        assert rule_edit[0] in text
        (rules / "readiness.yaml").write_text(text.replace(rule_edit[0], rule_edit[1], 1))
    if budgets:
        (rules / "budgets.yaml").write_text(budgets)
    catalog_path = None
    if catalog is not None:
        catalog_path = tmp_path / "catalog.yaml"
        catalog_path.write_text(catalog)
    settings = make_settings(state_url, pm.url, sandbox.url)
    return settings.model_copy(
        update={"rules": RulesSettings(path=rules, catalog_path=catalog_path)}
    )


def _make_ready(pm: PmDatabase, *codes: str) -> None:
    for code in codes:
        pm.set(code, status="Vacant Unrented Ready")


def _orders(engine: sa.Engine) -> dict[str, Order]:
    with engine.connect() as connection:
        return {o.external_property_id: o for o in outbox.list_orders(connection)}


def _events(engine: sa.Engine, kind: AuditKind) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return audit.query_events(connection, kinds=[kind])


def test_a_hold_budget_holds_the_order_past_its_size_until_approved_over_it(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Two orders a day per entity: the third home waits in awaiting_approval naming the budget;
    approving it needs --over-budget with a reason, which is audited; then it is sent."""
    settings = _settings(
        state_url, pm, sandbox, tmp_path,
        "budgets:\n  - {name: daily-cap, billing_entity_slug: '*', period: day, max_orders: 2}\n",
    )  # fmt: skip
    clock = Clock()
    with wired(settings) as parts:
        run_cycle(parts, clock)
        _make_ready(pm, "H1", "H2", "H3")
        clock.now += timedelta(minutes=5)
        summary = run_cycle(parts, clock)
        orders = _orders(parts.state)
        assert summary.budget_held == 1
        assert sorted(o.state.value for o in orders.values()) == [
            "awaiting_approval",
            "placed",
            "placed",
        ]
        (held,) = [o for o in orders.values() if o.state is OrderState.AWAITING_APPROVAL]
        assert held.held_by_budget == "daily-cap"
        assert len(sandbox.orders) == 2
        (created,) = [
            e for e in _events(parts.state, AuditKind.ORDER_CREATED) if e["order_id"] == held.id
        ]
        assert created["detail"]["held_by_budget"] == "daily-cap"
        assert created["detail"]["period"] == "day:2026-11-27"
        assert "HELD by budget 'daily-cap': budget 'daily-cap'" in summarise(created)
        assert "2 of 2 orders used in day:2026-11-27" in summarise(created)

        def budgets() -> tuple[Budget, ...]:
            return parts.rules.budgets

        with pytest.raises(OrderActionError, match="--over-budget --reason"):
            approve(
                parts.state, held.external_order_id, clock.now, "ops", budgets=budgets, zone=DENVER
            )
        approved = approve(
            parts.state, held.external_order_id, clock.now, "ops",
            budgets=budgets, zone=DENVER, over_budget_reason="finance said yes",
        )  # fmt: skip
        assert approved.state is OrderState.PLANNED
        run_cycle(parts, clock)
        assert _orders(parts.state)[held.external_property_id].state is OrderState.PLACED
        (approval,) = _events(parts.state, AuditKind.ORDER_APPROVED)
    assert len(sandbox.orders) == 3
    assert approval["detail"]["over_budget"] is True
    assert approval["detail"]["over_budget_reason"] == "finance said yes"
    assert approval["detail"]["budget"] == "daily-cap"
    assert "OVER BUDGET" in summarise(approval)


def test_approving_a_held_order_when_the_budget_has_room_again(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """After one order of the full day is canceled, the held one is approved without a flag
    and counts on the day it was approved."""
    settings = _settings(
        state_url, pm, sandbox, tmp_path,
        "budgets:\n  - {name: one-a-day, period: day, max_orders: 1}\n",
    )  # fmt: skip
    clock = Clock()
    with wired(settings) as parts:
        run_cycle(parts, clock)
        _make_ready(pm, "H1", "H2")
        run_cycle(parts, clock)
        orders = _orders(parts.state)
        held = next(o for o in orders.values() if o.held_by_budget == "one-a-day")
        placed = next(o for o in orders.values() if o.state is OrderState.PLACED)
        with parts.state.begin() as connection:
            outbox.set_outcome(connection, placed.id, OrderState.CANCELED, clock.now)
        later = clock.now + timedelta(days=1)
        approve(
            parts.state, held.external_order_id, later, "ops",
            budgets=lambda: parts.rules.budgets, zone=DENVER,
        )  # fmt: skip
        approved = _orders(parts.state)[held.external_property_id]
    assert (approved.state, approved.held_by_budget) == (OrderState.PLANNED, None)
    assert approved.budget_day == date(2026, 11, 28)


def test_a_skip_budget_orders_nothing_and_audits_budget_exceeded(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """$600 a month for everyone, skip: two $300 orders go out, the third is budget_exceeded,
    and the readiness is not planned again on the next cycle."""
    settings = _settings(
        state_url, pm, sandbox, tmp_path,
        "budgets:\n  - {period: month, max_spend_usd: 600, when_exceeded: skip}\n",
    )  # fmt: skip
    clock = Clock()
    with wired(settings) as parts:
        run_cycle(parts, clock)
        _make_ready(pm, "H1", "H2", "H3")
        summary = run_cycle(parts, clock)
        run_cycle(parts, clock)
        orders = _orders(parts.state)
        (exceeded,) = _events(parts.state, AuditKind.BUDGET_EXCEEDED)
    assert summary.budget_skipped == 1
    assert len(orders) == 2
    assert len(sandbox.orders) == 2
    assert exceeded["external_property_id"] not in orders
    assert exceeded["detail"]["budget"] == "all-entities-month"
    assert exceeded["detail"]["period_spend_cents"] == 2 * FULL_MARKETING_CENTS
    assert summarise(exceeded).startswith("not ordered: skipped by budget 'all-entities-month'")
    assert all(o.estimated_price_cents == FULL_MARKETING_CENTS for o in orders.values())
    assert all(o.price_estimated for o in orders.values())


def test_a_service_without_a_price_holds_the_order_and_is_never_sent_unpriced(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """The operator's catalog drops the 3D tour's price: the order waits for approval, with the
    reason, and nothing reaches the vendor."""
    settings = _settings(
        state_url, pm, sandbox, tmp_path, "",
        catalog="services:\n  zillow_3d_and_floor_plans:\n    prices_cents: {}\n",
    )  # fmt: skip
    clock = Clock()
    with wired(settings) as parts:
        run_cycle(parts, clock)
        _make_ready(pm, "H1")
        summary = run_cycle(parts, clock)
        run_cycle(parts, clock)
        (order,) = _orders(parts.state).values()
        (created,) = _events(parts.state, AuditKind.ORDER_CREATED)
    assert summary.budget_held == 1
    assert (order.state, order.held_by_budget) == (OrderState.AWAITING_APPROVAL, None)
    assert (order.estimated_price_cents, order.price_estimated) == (17500, True)
    assert created["detail"]["unpriced_services"] == ["zillow_3d_and_floor_plans"]
    assert "HELD: no price in the catalog for zillow_3d_and_floor_plans" in summarise(created)
    assert sandbox.orders == []


def test_a_rule_that_allows_unpriced_services_orders_them(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """`allow_unpriced: true` on the rule: the same order is sent, its estimate marked."""
    settings = _settings(
        state_url, pm, sandbox, tmp_path, "",
        rule_edit=("    priority: 20\n", "    priority: 20\n    allow_unpriced: true\n"),
        catalog="services:\n  zillow_3d_and_floor_plans:\n    prices_cents: {}\n",
    )  # fmt: skip
    clock = Clock()
    with wired(settings) as parts:
        run_cycle(parts, clock)
        _make_ready(pm, "H1")
        run_cycle(parts, clock)
        (order,) = _orders(parts.state).values()
    assert order.state is OrderState.PLACED
    assert len(sandbox.orders) == 1
