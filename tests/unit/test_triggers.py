"""Edge detection: readiness fires on the rising edge only, first sight is a choice, falls re-arm."""

from __future__ import annotations

from propready.core.triggers import TriggerMemory, detect_edges


def test_unseen_property_already_true_is_remembered_without_an_event() -> None:
    """first_sight=ignore: the condition is stored as true, no edge."""
    (update,) = detect_edges(None, {"ready": True}, "ignore")
    assert update.edge is None
    assert update.memory == TriggerMemory(True, 0)


def test_unseen_property_already_true_fires_with_first_sight_fire() -> None:
    """first_sight=fire: the first sight counts as edge number 1."""
    (update,) = detect_edges(None, {"ready": True}, "fire")
    assert update.edge is not None
    assert (update.edge.kind, update.edge.edge_seq) == ("first_sight", 1)


def test_false_to_true_is_a_rising_edge() -> None:
    """A remembered false that is now true produces the next edge number."""
    previous = {"ready": TriggerMemory(False, 2)}
    (update,) = detect_edges(previous, {"ready": True}, "ignore")
    assert update.edge is not None
    assert (update.edge.kind, update.edge.edge_seq) == ("rising_edge", 3)
    assert update.memory == TriggerMemory(True, 3)


def test_true_staying_true_changes_nothing() -> None:
    """A repeated or overlapping poll of an unchanged property produces no update at all."""
    assert detect_edges({"ready": TriggerMemory(True, 1)}, {"ready": True}, "fire") == []


def test_falling_back_re_arms_without_an_event() -> None:
    """True to false keeps the edge count and produces no edge, so the next rise fires."""
    (update,) = detect_edges({"ready": TriggerMemory(True, 1)}, {"ready": False}, "ignore")
    assert update.edge is None
    assert update.memory == TriggerMemory(False, 1)
    (again,) = detect_edges({"ready": update.memory}, {"ready": True}, "ignore")
    assert again.edge is not None
    assert again.edge.edge_seq == 2


def test_a_trigger_added_later_counts_as_first_sight() -> None:
    """A new trigger on a known property does not order every home that already matches it."""
    previous = {"old": TriggerMemory(False, 0)}
    updates = detect_edges(previous, {"old": False, "new": True}, "ignore")
    assert [(u.trigger_name, u.edge) for u in updates] == [("new", None)]


def test_unseen_property_false_is_remembered_as_false() -> None:
    """A first sight with the condition false stores false, so the first rise fires."""
    (update,) = detect_edges(None, {"ready": False}, "ignore")
    assert update.memory == TriggerMemory(False, 0)
    assert update.edge is None
