"""Backfill: order the readiness that was seen but not ordered on purpose.

Two kinds of readiness wait for a backfill:
- first sight: `first_sight = "ignore"` remembers a trigger that was already true when propready
  first saw the home as true without an event (edge count 0), so turning propready on does not
  order the whole portfolio at once; a backfill fires those edges, as events of kind `backfill`;
- dry run: readiness events decided while `orders.mode` was `dry_run` (state `dry_run`: dry run
  consumes nothing); once the mode is live or approval, a backfill plans them again.

Each home is re-read from the source first (the order needs the current row, access code
included, which the state database never stores) and its trigger must still hold. `--dry-run`
does exactly the same reading and checking and writes nothing, so it lists what a backfill
would fire.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa

from propready.adapters.source import stream_batches
from propready.adapters.store import audit, properties
from propready.adapters.store.schema import readiness_event
from propready.core.batch_plan import EdgeDecision, PollScope, decide_edge
from propready.core.expressions import EvaluationScope
from propready.core.facts import RowProblem, RowTyper, facts_for_storage
from propready.core.model import Edge, EventState, OpenEvent, PropertySnapshot
from propready.core.triggers import StoredProperty, TriggerMemory
from propready.service.components import Components, CycleSummary
from propready.service.decide import record_decisions


@dataclass(frozen=True, slots=True)
class BackfillCandidate:
    external_property_id: str
    trigger_name: str
    # The readiness event decided in dry run, or None for a trigger true since first sight.
    event: OpenEvent | None = None

    @property
    def kind(self) -> str:
        return "first_sight" if self.event is None else "dry_run"


Progress = Callable[[int], None]


class BackfillBusy(RuntimeError):
    """Another process is polling; a backfill must not change trigger memory under it."""


def backfill_candidates(
    components: Components, trigger: str | None = None
) -> list[BackfillCandidate]:
    """What waits for a backfill, from the state database alone, in id order: triggers true since
    first sight, and (unless the mode is dry_run) readiness decided in dry run."""
    names = set(components.rules.triggers) if trigger is None else {trigger}
    found: list[BackfillCandidate] = []
    with components.state.connect() as connection:
        for property_id, triggers in properties.iter_properties(connection):
            for name, memory in triggers.items():
                if name in names and memory.is_true and memory.edge_count == 0:
                    found.append(BackfillCandidate(property_id, name))
        if components.settings.orders.mode != "dry_run":
            found.extend(
                BackfillCandidate(event.external_property_id, event.edge.trigger_name, event)
                for event in _dry_run_events(connection)
                if event.edge.trigger_name in names
            )
    return sorted(found, key=lambda c: (c.external_property_id, c.trigger_name))


def _dry_run_events(connection: sa.Connection) -> list[OpenEvent]:
    rows = connection.execute(
        sa.select(readiness_event).where(readiness_event.c.state == EventState.DRY_RUN.value)
    ).mappings()
    return [OpenEvent.from_row(row) for row in rows]


def backfill(
    components: Components,
    now: Callable[[], datetime],
    *,
    dry_run: bool,
    trigger: str | None = None,
    progress: Progress | None = None,
) -> list[BackfillCandidate]:
    """Fire the candidates whose trigger still holds (with `dry_run`, only say which would)."""
    candidates = backfill_candidates(components, trigger)
    if not candidates:
        return []
    wanted: dict[str, list[BackfillCandidate]] = {}
    for candidate in candidates:
        wanted.setdefault(candidate.external_property_id, []).append(candidate)
    source = components.settings.source
    fired: list[BackfillCandidate] = []
    summary = CycleSummary()
    scope: PollScope | None = None
    # A backfill changes trigger memory, like a poll: never at the same time as one.
    with properties.exclusive_poll(components.state) as mine:
        if not mine:
            raise BackfillBusy("a poll is running; try again when it has finished")
        for batch in stream_batches(components.source, source.query, source.batch_size):
            typer = RowTyper(
                batch.columns, source.zone, source.types, secret_columns=source.secret_columns
            )
            scope = scope or _scope(components, typer)
            for values in batch.rows:
                property_id = scope.typer.property_id(values)
                if isinstance(property_id, RowProblem) or property_id not in wanted:
                    continue
                home = wanted.pop(property_id)
                fired.extend(_fire(components, scope, values, home, now(), summary, dry_run))
                if progress is not None:
                    progress(len(home))
    return fired


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
        config_fingerprint=components.plan_fingerprint(),
    )


def _fire(
    components: Components,
    scope: PollScope,
    values: Sequence[object],
    home: list[BackfillCandidate],
    now: datetime,
    summary: CycleSummary,
    dry_run: bool,
) -> list[BackfillCandidate]:
    snapshot = scope.typer.type_row(values)
    if isinstance(snapshot, RowProblem):
        return []  # quarantined rows are the poll's business
    property_id = snapshot.external_property_id
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
            secrets=snapshot.secrets,
        )
        firing = _still_due(components, stored, evaluation, home)
        if dry_run or not firing:
            return firing
        memory = dict(stored.triggers)
        decisions = []
        for candidate in firing:
            decisions.append(_decision(scope, snapshot, evaluation, candidate, stored.row_hash))
            if candidate.event is None:
                memory[candidate.trigger_name] = TriggerMemory(True, 1)
        if memory != stored.triggers:
            properties.save_property_triggers(connection, property_id, memory)
        record_decisions(components, connection, decisions, now, summary)
    return firing


def _still_due(
    components: Components,
    stored: StoredProperty,
    evaluation: EvaluationScope,
    home: list[BackfillCandidate],
) -> list[BackfillCandidate]:
    """The candidates whose trigger holds now; first-sight ones re-checked against the memory
    inside the transaction (a poll or another backfill may have moved on)."""
    due = []
    for candidate in home:
        if candidate.event is None:
            current = stored.triggers.get(candidate.trigger_name)
            if current is None or not current.is_true or current.edge_count != 0:
                continue
        trigger = components.rules.triggers.get(candidate.trigger_name)
        if trigger is not None and evaluation.is_true(trigger)[0]:
            due.append(candidate)
    return due


def _decision(
    scope: PollScope,
    snapshot: PropertySnapshot,
    evaluation: EvaluationScope,
    candidate: BackfillCandidate,
    row_hash: str,
) -> EdgeDecision:
    event_facts = facts_for_storage(snapshot.public_facts())
    basis = scope.basis(row_hash)
    if candidate.event is None:
        edge = Edge(candidate.trigger_name, 1, "backfill")
        return replace(decide_edge(scope, snapshot, edge, evaluation, event_facts), basis=basis)
    event = candidate.event
    decided = decide_edge(
        scope, snapshot, event.edge, evaluation, event_facts, attempt=event.plan_attempts
    )
    return replace(
        decided,
        basis=basis,
        event=event,
        replanned_because="backfill of a readiness decided in dry run",
    )
