"""Readiness detection: which trigger conditions rose from false to true (pure, no I/O).

A readiness event fires on the rising edge only. A property seen for the first time with a
condition already true fires only when `first_sight` is "fire" (otherwise the condition is
recorded as true and waits to fall and rise again). A condition that falls re-arms the trigger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from propready.core.model import Edge

FirstSight = Literal["ignore", "fire"]


@dataclass(frozen=True, slots=True)
class TriggerMemory:
    """What the state database remembers of one trigger for one property."""

    is_true: bool
    edge_count: int


@dataclass(frozen=True, slots=True)
class TriggerUpdate:
    """The new memory for a trigger, when it changed, and the edge it produced, if any."""

    trigger_name: str
    memory: TriggerMemory
    edge: Edge | None


def detect_edges(
    previous: Mapping[str, TriggerMemory] | None,
    current: Mapping[str, bool],
    first_sight: FirstSight,
) -> list[TriggerUpdate]:
    """Compare remembered trigger values with the current ones; return only what changed.

    `previous` is None for a property never seen before.
    """
    updates: list[TriggerUpdate] = []
    for name, now_true in current.items():
        before = previous.get(name) if previous is not None else None
        if before is not None and before.is_true == now_true:
            continue
        count = before.edge_count if before is not None else 0
        edge: Edge | None = None
        if now_true and before is not None:
            edge = Edge(name, count + 1, "rising_edge")
        elif now_true and previous is None and first_sight == "fire":
            edge = Edge(name, count + 1, "first_sight")
        elif now_true and previous is not None and before is None and first_sight == "fire":
            # A trigger added to the rules after the property was first seen counts as first
            # sight, so a new trigger does not order for every home that already matches it.
            edge = Edge(name, count + 1, "first_sight")
        if before is None and not now_true:
            updates.append(TriggerUpdate(name, TriggerMemory(False, 0), None))
            continue
        new_count = edge.edge_seq if edge is not None else count
        updates.append(TriggerUpdate(name, TriggerMemory(now_true, new_count), edge))
    return updates
