"""Backfill: order homes whose trigger was already true when propready first saw them.

`first_sight = "ignore"` remembers such triggers as true without an event (edge count 0), so
turning propready on does not order the whole portfolio at once. A backfill fires those edges
on purpose, as events of kind `backfill`, after re-reading each home from the source (the order
needs the current row, access code included, which the state database never stores) and
checking that the trigger still holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from propready.adapters.source import stream_batches
from propready.adapters.store import audit, properties
from propready.core.batch_plan import PollScope, decide_edge
from propready.core.expressions import EvaluationScope
from propready.core.facts import RowProblem, RowTyper, facts_for_storage
from propready.core.model import Edge
from propready.core.triggers import TriggerMemory
from propready.service.components import Components, CycleSummary
from propready.service.decide import record_decisions


@dataclass(frozen=True, slots=True)
class BackfillCandidate:
    external_property_id: str
    trigger_name: str


Progress = Callable[[int], None]


def backfill_candidates(
    components: Components, trigger: str | None = None
) -> list[BackfillCandidate]:
    """Triggers remembered as true that never fired (seen true at first sight), in id order."""
    names = set(components.rules.triggers) if trigger is None else {trigger}
    found: list[BackfillCandidate] = []
    with components.state.connect() as connection:
        for property_id, triggers in properties.iter_properties(connection):
            for name, memory in triggers.items():
                if name in names and memory.is_true and memory.edge_count == 0:
                    found.append(BackfillCandidate(property_id, name))
    return found


def backfill(
    components: Components,
    now: Callable[[], datetime],
    *,
    dry_run: bool,
    trigger: str | None = None,
    progress: Progress | None = None,
) -> list[BackfillCandidate]:
    """Fire the candidates' edges (or only list them with `dry_run`); return what fired."""
    candidates = backfill_candidates(components, trigger)
    if dry_run or not candidates:
        return candidates
    wanted: dict[str, set[str]] = {}
    for candidate in candidates:
        wanted.setdefault(candidate.external_property_id, set()).add(candidate.trigger_name)
    source = components.settings.source
    fired: list[BackfillCandidate] = []
    summary = CycleSummary()
    scope: PollScope | None = None
    # A backfill changes trigger memory, like a poll: never at the same time as one.
    with properties.exclusive_poll(components.state) as mine:
        if not mine:
            raise BackfillBusy("a poll is running; try again when it has finished")
        for batch in stream_batches(components.source, source.query, source.batch_size):
            scope = scope or _scope(components, RowTyper(batch.columns, source.zone, source.types))
            for values in batch.rows:
                property_id = scope.typer.property_id(values)
                if isinstance(property_id, RowProblem) or property_id not in wanted:
                    continue
                names = wanted.pop(property_id)
                fired.extend(_fire(components, scope, values, names, now(), summary))
                if progress is not None:
                    progress(1)
    return fired


class BackfillBusy(RuntimeError):
    """Another process is polling; a backfill must not change trigger memory under it."""


def _scope(components: Components, typer: RowTyper) -> PollScope:
    settings = components.settings
    return PollScope(
        rules=components.rules,
        typer=typer,
        catalog=components.catalog,
        zone=settings.source.zone,
        first_sight=settings.orders.first_sight,
        default_window_hours=settings.orders.duplicate_window_hours,
        full_pass=True,
    )


def _fire(
    components: Components,
    scope: PollScope,
    values: Sequence[object],
    names: set[str],
    now: datetime,
    summary: CycleSummary,
) -> list[BackfillCandidate]:
    snapshot = scope.typer.type_row(values)
    if isinstance(snapshot, RowProblem):
        return []  # quarantined rows are the poll's business
    property_id = snapshot.external_property_id
    fired: list[BackfillCandidate] = []
    with components.state.begin() as connection, audit.buffered(connection):
        stored = properties.load_properties(connection, [property_id], with_facts=True).get(
            property_id
        )
        if stored is None:
            return []
        evaluation = EvaluationScope(
            snapshot.facts,
            now,
            scope.zone,
            previous=scope.typer.retype(stored.facts) if stored.facts else None,
        )
        memory = dict(stored.triggers)
        event_facts = facts_for_storage(snapshot.public_facts())
        decisions = []
        for name in sorted(names):
            current = memory.get(name)
            # Re-checked inside the transaction: a poll or another backfill may have moved on.
            if current is None or not current.is_true or current.edge_count != 0:
                continue
            holds, _ = evaluation.is_true(components.rules.triggers[name])
            if not holds:
                continue
            memory[name] = TriggerMemory(True, 1)
            edge = Edge(name, 1, "backfill")
            decisions.append(decide_edge(scope, snapshot, edge, evaluation, event_facts))
            fired.append(BackfillCandidate(property_id, name))
        if decisions:
            properties.save_property_triggers(connection, property_id, memory)
            record_decisions(components, connection, decisions, now, summary)
    return fired
