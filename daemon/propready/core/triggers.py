"""Readiness detection: which trigger conditions rose from false to true (pure, no I/O).

A readiness event fires on the rising edge only. A property seen for the first time with a
condition already true fires only when `first_sight` is "fire" (otherwise the condition is
recorded as true and waits to fall and rise again). A condition that falls re-arms the trigger.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from propready.core.expressions import fields_read, reads_variable
from propready.core.model import Edge

FirstSight = Literal["ignore", "fire"]


@dataclass(frozen=True, slots=True)
class TriggerMemory:
    """What the state database remembers of one trigger for one property."""

    is_true: bool
    edge_count: int


def encode_memory(memory: Mapping[str, TriggerMemory]) -> dict[str, list[Any]]:
    """Trigger memory as the state database keeps it: {trigger: [is_true, edge_count]}."""
    return {name: [m.is_true, m.edge_count] for name, m in memory.items()}


def decode_memory(data: Mapping[str, Any] | None) -> dict[str, TriggerMemory]:
    return {name: TriggerMemory(bool(v[0]), int(v[1])) for name, v in (data or {}).items()}


class StoredProperty:
    """What the state database remembers of a property: the fingerprint of its last source row,
    its trigger memory, and (only when a rule reads `previous`) the facts it had then.

    The trigger memory is decoded only when someone needs it: most polled rows are unchanged,
    and for them the poll only compares the fingerprint and checks that every trigger has a
    memory; decoding JSON for a million rows is wasted work.
    """

    __slots__ = ("_decoded", "complete", "facts", "row_hash", "triggers_json")

    def __init__(
        self,
        row_hash: str,
        triggers_json: str | None,
        facts: Mapping[str, Any] | None = None,
        *,
        complete: bool | None = None,
    ) -> None:
        self.row_hash = row_hash
        self.triggers_json = triggers_json or "{}"
        self.facts = facts
        # Set instead of the memory when the database answered only "does it hold every
        # trigger" (`load_properties(..., complete_keys=...)`): enough for an unchanged row.
        self.complete = complete
        self._decoded: dict[str, TriggerMemory] | None = None

    @property
    def triggers(self) -> dict[str, TriggerMemory]:
        if self.complete is not None:
            raise RuntimeError("only the fingerprint was loaded, not the trigger memory")
        if self._decoded is None:
            self._decoded = decode_memory(json.loads(self.triggers_json))
        return self._decoded

    def remembers_all(self, names: Collection[str]) -> bool:
        """Whether every trigger in `names` has a memory (a JSON key), without decoding."""
        return self.remembers_keys(json_keys(names))

    def remembers_keys(self, keys: tuple[str, ...]) -> bool:
        """`remembers_all` with the names already written as JSON keys (`json_keys`): the poll
        asks it of every unchanged row, with the same names."""
        if self.complete is not None:
            return self.complete
        memory = self.triggers_json
        return all(key in memory for key in keys)


def json_keys(names: Collection[str]) -> tuple[str, ...]:
    """Trigger names as they stand as keys in a stored memory's JSON text."""
    return tuple(f'"{name}"' for name in names)


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


@dataclass(frozen=True, slots=True)
class TriggerAnalysis:
    """What the poller must know about a rule set's triggers to skip work safely.

    - `fields`: the property fields any trigger reads (None: some trigger reads the whole map),
      so trigger evaluation converts only those into CEL;
    - `time_based`: triggers that read `now` or `today`: their value can change while the row
      does not, so full passes re-evaluate them on unchanged rows;
    - `change_based`: triggers that read `previous`: true only on the poll that saw the change,
      so they fall back (re-arm) on the next poll even though the row is unchanged.
    """

    names: frozenset[str]
    fields: frozenset[str] | None
    time_based: frozenset[str]
    change_based: frozenset[str]
    # The fields `previous` is read for anywhere (triggers and rules); None: any field. Only
    # these are kept in the state database: a first pass over a large portfolio writes far less.
    remembered: frozenset[str] | None = frozenset()


def analyse_triggers(
    sources: Mapping[str, str], other_expressions: Iterable[str] = ()
) -> TriggerAnalysis:
    """Analyse trigger expressions given as {name: CEL source}.

    `other_expressions` (the rules' conditions and quantities) count only for `remembered`.
    """
    fields: set[str] | None = set()
    time_based: set[str] = set()
    change_based: set[str] = set()
    for name, source in sources.items():
        used = fields_read(source, "property")
        if used is None or fields is None:
            fields = None
        else:
            fields |= used
        if reads_variable(source, "now") or reads_variable(source, "today"):
            time_based.add(name)
        if reads_variable(source, "previous"):
            change_based.add(name)
            previous_fields = fields_read(source, "previous")
            if previous_fields is None:
                fields = None
            elif fields is not None:
                fields |= previous_fields
    remembered: set[str] | None = set()
    for source in [*sources.values(), *other_expressions]:
        if not reads_variable(source, "previous"):
            continue
        read = fields_read(source, "previous")
        remembered = None if read is None or remembered is None else remembered | read
    return TriggerAnalysis(
        names=frozenset(sources),
        fields=frozenset(fields) if fields is not None else None,
        time_based=frozenset(time_based),
        change_based=frozenset(change_based),
        remembered=frozenset(remembered) if remembered is not None else None,
    )


def triggers_to_reevaluate(
    analysis: TriggerAnalysis, memory: Mapping[str, TriggerMemory], *, full_pass: bool
) -> frozenset[str]:
    """For a property whose source row did not change: the triggers whose value may have."""
    due = set(analysis.names - memory.keys())  # added to the rules since the last change
    if full_pass:
        due |= analysis.time_based
    due |= {name for name in analysis.change_based if name in memory and memory[name].is_true}
    return frozenset(due)
