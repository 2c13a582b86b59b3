"""The duplicate window under a real race: 20 OS processes order the same property at once."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from propready.adapters.store import outbox
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import orders
from propready.core.orders import FREES_WINDOW, OrderState
from propready.core.planning import OrderPlan

RACERS = 20
ROUNDS = 3
START = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
DECISION: dict[str, Any] = {"event_id": None, "rule_id": "r", "rules_version": "v"}


def _plan(property_id: str, order_id: str, window_hours: float = 72) -> OrderPlan:
    return OrderPlan(
        external_order_id=order_id,
        external_property_id=property_id,
        billing_entity_slug="investment_entity_1",
        payload={"external_property_id": property_id},
        window_hours=window_hours,
        requires_approval=False,
    )


def _racer(url: str, index: int, mode: str, barrier: Any, results: Any) -> None:
    """One process: wait for all the others, then try to create an order for each round's home."""
    engine = create_state_engine(url)
    try:
        for round_number in range(ROUNDS):
            plan = _plan(f"RACE-{round_number}", f"pr-race-{round_number}-{index}")
            now = START + timedelta(seconds=index)  # different clocks, overlapping windows
            barrier.wait(timeout=60)
            result = _insert_retrying_deadlocks(engine, plan, mode, now)
            results.put((round_number, index, result))
    finally:
        engine.dispose()


def _insert_retrying_deadlocks(engine: sa.Engine, plan: OrderPlan, mode: str, now: datetime) -> str:
    """One racer's attempt; a transaction PostgreSQL aborted as a deadlock is simply run again
    (what any caller does with SQLSTATE 40P01), so every loser ends refused or blocked."""
    for _attempt in range(5):
        try:
            return _insert_once(engine, plan, mode, now)
        except sa.exc.OperationalError as exc:
            if not outbox.is_deadlock(exc):
                raise
    raise AssertionError("deadlocked five times in a row")


def _insert_once(engine: sa.Engine, plan: OrderPlan, mode: str, now: datetime) -> str:
    race = {**DECISION, "rule_id": "race", "state": OrderState.PLANNED, "now": now}
    try:
        with engine.begin() as connection:
            if mode == "constraint_alone":  # the database's guarantee, with no check in front
                outbox.insert_order(connection, plan, **race)
                return "inserted"
            outcome = outbox.insert_order_in_window(connection, plan, **race)
    except sa.exc.IntegrityError:
        return "integrity_error"
    if isinstance(outcome, outbox.WindowTaken):
        how = "constraint" if outcome.by_constraint else "check"
        return f"blocked_by_{how}:{outcome.blocker.external_order_id}"
    return "inserted"


def _race(url: str, mode: str) -> dict[int, list[str]]:
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited sockets
    barrier = context.Barrier(RACERS)
    results = context.Queue()
    processes = [
        context.Process(target=_racer, args=(url, i, mode, barrier, results)) for i in range(RACERS)
    ]
    for process in processes:
        process.start()
    outcomes: dict[int, list[str]] = {r: [] for r in range(ROUNDS)}
    for _ in range(RACERS * ROUNDS):
        round_number, _index, result = results.get(timeout=120)
        outcomes[round_number].append(result)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    results.close()
    results.join_thread()
    return outcomes


def _orders_per_property(url: str) -> dict[str, list[str]]:
    engine = create_state_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(orders.c.external_property_id, orders.c.external_order_id)
            ).all()
    finally:
        engine.dispose()
    found: dict[str, list[str]] = {}
    for property_id, order_id in rows:
        found.setdefault(property_id, []).append(order_id)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["check_and_constraint", "constraint_alone"])
def test_twenty_racing_processes_create_exactly_one_order(state_url: str, mode: str) -> None:
    """20 processes race for one property (3 rounds): one order each time; the rest are blocked."""
    outcomes = _race(state_url, mode)
    stored = _orders_per_property(state_url)
    for round_number, results in outcomes.items():
        assert results.count("inserted") == 1, results
        (winner,) = stored[f"RACE-{round_number}"]
        losers = [r for r in results if r != "inserted"]
        assert len(losers) == RACERS - 1
        if mode == "check_and_constraint":
            # Every loser names the order that holds the window, however it was stopped.
            assert {r.split(":", 1)[1] for r in losers} == {winner}
        else:
            assert set(losers) == {"integrity_error"}


def test_the_database_refuses_an_overlapping_window(state_engine: sa.Engine) -> None:
    """Without any check in front, the store itself refuses a second overlapping order."""
    with state_engine.begin() as connection:
        outbox.insert_order(
            connection,
            _plan("H1", "first"),
            **DECISION,
            state=OrderState.PLACED,
            now=START,
        )
    with pytest.raises(sa.exc.IntegrityError), state_engine.begin() as connection:
        outbox.insert_order(
            connection,
            _plan("H1", "second"),
            **DECISION,
            state=OrderState.PLANNED,
            now=START + timedelta(hours=71),
        )


@pytest.mark.parametrize("freed", sorted(s.value for s in FREES_WINDOW))
def test_a_freed_window_admits_a_new_order(state_engine: sa.Engine, freed: str) -> None:
    """Rejected, failed and canceled orders free the window, in the check and in the store."""
    with state_engine.begin() as connection:
        first = outbox.insert_order(
            connection,
            _plan("H1", "first"),
            **DECISION,
            state=OrderState.PLACED,
            now=START,
        )
    with state_engine.begin() as connection:
        outbox.set_outcome(connection, first, OrderState(freed), START + timedelta(hours=1))
    with state_engine.begin() as connection:
        outcome = outbox.insert_order_in_window(
            connection,
            _plan("H1", "second"),
            **DECISION,
            state=OrderState.PLANNED,
            now=START + timedelta(hours=2),
        )
    assert isinstance(outcome, outbox.OrderInserted)


def test_windows_that_only_touch_do_not_conflict(state_engine: sa.Engine) -> None:
    """An order may start the instant the previous window ends ([created_at, window_end))."""
    with state_engine.begin() as connection:
        for index, start in enumerate((START, START + timedelta(hours=72))):
            outcome = outbox.insert_order_in_window(
                connection,
                _plan("H1", f"o{index}"),
                **DECISION,
                state=OrderState.PLANNED,
                now=start,
            )
            assert isinstance(outcome, outbox.OrderInserted)


def test_a_blocked_insert_leaves_the_surrounding_transaction_usable(
    state_engine: sa.Engine,
) -> None:
    """The loser's savepoint is rolled back; the rest of the poll batch still commits."""
    with state_engine.begin() as connection:
        outbox.insert_order(
            connection,
            _plan("H1", "first"),
            **DECISION,
            state=OrderState.PLANNED,
            now=START,
        )
    with state_engine.begin() as connection:
        # Same id as the first order: the check passes (other property) but the store refuses.
        taken = outbox.insert_order_in_window(
            connection,
            _plan("H2", "first"),
            **DECISION,
            state=OrderState.PLANNED,
            now=START,
        )
        assert isinstance(taken, outbox.WindowTaken)
        assert taken.by_constraint
        assert taken.blocker.external_order_id == "first"
        later = outbox.insert_order_in_window(
            connection,
            _plan("H3", "third"),
            **DECISION,
            state=OrderState.PLANNED,
            now=START,
        )
    assert isinstance(later, outbox.OrderInserted)
    assert sorted(_orders_per_property(str(state_engine.url.render_as_string(False)))) == [
        "H1",
        "H3",
    ]


def test_constraint_and_code_agree_on_which_states_free_the_window(state_engine: sa.Engine) -> None:
    """The migration's state list (constraint or trigger) is FREES_WINDOW, no more, no less."""
    with state_engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            definition = connection.execute(
                sa.text(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conname = 'ex_orders_duplicate_window'"
                )
            ).scalar_one()
            assert "EXCLUDE USING gist" in definition
        else:
            definition = connection.execute(
                sa.text(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND name = 'orders_duplicate_window'"
                )
            ).scalar_one()
    named = {s.value for s in OrderState if f"'{s.value}'" in definition}
    assert named == {s.value for s in FREES_WINDOW}
