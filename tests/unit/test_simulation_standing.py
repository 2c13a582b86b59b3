"""Whether the daemon would place an order the rules make now, given what it remembers (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from propready.core.simulation import ExistingOrder, standing
from propready.core.triggers import TriggerMemory

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def order(state: str, hours_ago: float, window: float = 72, edge: int = 1) -> ExistingOrder:
    created = NOW - timedelta(hours=hours_ago)
    return ExistingOrder(
        "pr-1", state, created, created + timedelta(hours=window), "vacant_ready", edge
    )


def kind(memory: TriggerMemory | None, orders: list[ExistingOrder], seen: bool = True, first_sight: str = "ignore") -> str:  # fmt: skip
    return standing("vacant_ready", seen, memory, orders, NOW, first_sight).kind


def test_the_order_of_this_readiness_wins() -> None:
    """An order for the current edge means already ordered, whatever its state."""
    assert kind(TriggerMemory(True, 1), [order("rejected", 1)]) == "already_ordered"


def test_an_open_order_of_an_earlier_readiness_holds() -> None:
    """A planned, awaiting or unknown order answers a new readiness too."""
    for state in ("planned", "sending", "awaiting_approval", "unknown"):
        assert kind(TriggerMemory(False, 1), [order(state, 200)]) == "open_order"


def test_a_window_holds_until_it_ends_and_final_orders_free_it() -> None:
    """A placed order inside its window holds; after it, or rejected/canceled, it does not."""
    assert kind(TriggerMemory(False, 1), [order("placed", 10)]) == "in_window"
    assert kind(TriggerMemory(False, 1), [order("placed", 100)]) == "would_order"
    assert kind(TriggerMemory(False, 1), [order("canceled", 10)]) == "would_order"


def test_first_sight_is_not_ordered_unless_configured() -> None:
    """Unseen, or true since first sight (no edge yet): not ordered with first_sight = ignore."""
    assert kind(None, [], seen=False) == "first_sight"
    assert kind(TriggerMemory(True, 0), []) == "first_sight"
    assert kind(None, [], seen=False, first_sight="fire") == "would_order"


def test_a_readiness_decided_without_an_order_is_said_so() -> None:
    """An edge that produced no order (dry run, not plannable, no rule then) is `decided`."""
    assert kind(TriggerMemory(True, 2), [order("placed", 500, edge=1)]) == "decided"
