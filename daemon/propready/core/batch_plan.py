"""One batch of source rows, decided (pure): what to skip, evaluate, store, quarantine and order.

`plan_batch` gets the rows a poll read, what the state database remembers of those homes and the
rows already held in quarantine, and returns a `BatchPlan`: the property records to insert or
update, trigger memory to save, rows to quarantine or release, and the rising edges with the
rules' decision and, when the decision orders something, the order request. The service layer
only loads what the plan needs and writes what it says, in one transaction per batch.

Per row, in order:
- no usable id, or an id already read in this poll -> quarantine;
- unchanged fingerprint -> skip, unless a trigger's value can move without the row (time-based
  triggers on a full pass, change-based ones that must fall back, triggers added since): those
  are re-evaluated, and an edge decides like any other;
- new or changed -> typed (a value that fails a check quarantines the row), every trigger
  evaluated, memory stored, rising edges decided; a row that was held and now passes is released.
An unexpected error while typing, evaluating or planning one row quarantines that row, with the
error as the reason: one hostile row never stops the batch.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Any, NamedTuple

from propready.core.catalog import Catalog
from propready.core.checkpoint import CursorTracker
from propready.core.expressions import EvaluationScope
from propready.core.facts import BatchScreen, RowProblem, RowTyper, facts_for_storage
from propready.core.model import (
    Decision,
    Edge,
    OpenEvent,
    PropertySnapshot,
    basis_parts,
    plan_basis,
)
from propready.core.planning import OrderPlan, PlanProblem, plan_order
from propready.core.rules import RuleSet, decide
from propready.core.trigger_values import TriggerEvaluator
from propready.core.triggers import (
    FirstSight,
    StoredProperty,
    TriggerMemory,
    TriggerUpdate,
    detect_edges,
    json_keys,
    triggers_to_reevaluate,
)


def fingerprint(values: Sequence[Any]) -> str:
    """A digest of a raw row, stable across processes (PostgreSQL sources compute their own)."""
    return hashlib.blake2b(repr(tuple(values)).encode(), digest_size=16).hexdigest()


class SourceRow(NamedTuple):
    """One row as the source returned it, with the fingerprint of its raw values and its
    property id (or why it has none usable). A named tuple: a poll makes one per source row,
    and a tuple is built several times faster than a frozen dataclass."""

    values: Sequence[Any]
    digest: str
    identity: str | RowProblem


def source_rows(
    typer: RowTyper, values: Sequence[Sequence[Any]], digests: Sequence[str]
) -> list[SourceRow]:
    """A batch as the planner takes it: each row with its fingerprint and id, read once."""
    ids = map(typer.property_id, values)
    return list(map(SourceRow._make, zip(values, digests, ids, strict=True)))


@dataclass(frozen=True, slots=True)
class PollScope:
    """What stays fixed for a whole poll."""

    rules: RuleSet
    typer: RowTyper
    catalog: Catalog
    zone: tzinfo
    first_sight: FirstSight
    default_window_hours: float
    full_pass: bool
    cursor_index: int | None = None
    # What, besides the rules and the home's row, an order's plan depends on (the mode, the
    # default window, the catalog): an open readiness is planned again when it changes.
    config_fingerprint: str = ""

    def basis(self, row_hash: str) -> str:
        return plan_basis(row_hash, self.rules.version, self.config_fingerprint)

    @property
    def quick_skip(self) -> bool:
        """Whether an unchanged row whose memory holds every trigger needs nothing at all: no
        trigger can move without its row (none is time-based on a full pass, none reads
        changes that must fall back)."""
        analysis = self.rules.analysis
        return not analysis.change_based and not (self.full_pass and analysis.time_based)


@dataclass
class PollMemory:
    """What a poll carries from batch to batch: ids already read, the cursor's progress, the
    rows held in quarantine (row key -> row hash, kept up to date as the poll holds and releases
    rows), and the trigger values computed so far."""

    cursor: CursorTracker
    held: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    evaluator: TriggerEvaluator | None = None
    # Readiness events still open (no order came of them yet), by home; each is looked at once
    # per poll, when its home's row is read.
    open_events: dict[str, list[OpenEvent]] = field(default_factory=dict)
    # Ids that several source rows share: every such row is held until the id is unique (a full
    # pass asks the source which ids repeat before it reads; between full passes, ids held as
    # repeated stay held).
    ambiguous: set[str] = field(default_factory=set)

    def held_repeats(self, property_id: str) -> list[str]:
        """The keys under which rows of this id are held as repeated."""
        prefix = f"{property_id}{REPEAT_MARK}"
        return [key for key in self.held if key.startswith(prefix)]

    def evaluator_at(self, rules: RuleSet, now: datetime, zone: tzinfo) -> TriggerEvaluator:
        if self.evaluator is None or self.evaluator.rules is not rules:
            self.evaluator = TriggerEvaluator(rules, now, zone)
        self.evaluator = self.evaluator.at(now)
        return self.evaluator


# Held rows of an id several rows share are keyed "<id>#dup..." (one key per row version).
REPEAT_MARK = "#dup"


def repeated_ids(held: Mapping[str, str]) -> set[str]:
    """Ids held as repeated (from the quarantine's keys)."""
    return {key.split(REPEAT_MARK, 1)[0] for key in held if REPEAT_MARK in key}


@dataclass(frozen=True, slots=True)
class PropertyWrite:
    """A property's new state: its row fingerprint, remembered facts and trigger memory."""

    external_property_id: str
    row_hash: str
    facts: Mapping[str, Any]
    triggers: Mapping[str, TriggerMemory]


@dataclass(frozen=True, slots=True)
class TriggerWrite:
    """New trigger memory for a property whose row did not change."""

    external_property_id: str
    triggers: Mapping[str, TriggerMemory]


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A row to hold: `known` when it is already held (with another version of the row)."""

    row_key: str
    row_hash: str
    problem: RowProblem
    known: bool


@dataclass(frozen=True, slots=True)
class EdgeDecision:
    """A rising edge with everything decided about it: the event's facts (secrets left out), the
    rules' decision, and the order request or the reasons there can be none."""

    snapshot: PropertySnapshot
    edge: Edge
    event_facts: Mapping[str, Any]
    decision: Decision
    plan: OrderPlan | None = None
    problems: tuple[str, ...] = ()
    basis: str = ""  # what the plan was made from (core/model.py plan_basis)
    # A readiness planned again (it was open): the stored event, and why it was planned again.
    event: OpenEvent | None = None
    replanned_because: str = ""
    # An operator's audited `reorder --ignore-window`: the order holds no window and is not
    # stopped by another's.
    window_override: bool = False


@dataclass(frozen=True, slots=True)
class EventClosing:
    """An open readiness that will not be planned again, and why."""

    event: OpenEvent
    reason: str


@dataclass(frozen=True, slots=True)
class SuspiciousCursor:
    external_property_id: str
    value: Any


@dataclass
class BatchPlan:
    inserts: list[PropertyWrite] = field(default_factory=list)
    updates: list[PropertyWrite] = field(default_factory=list)
    trigger_writes: list[TriggerWrite] = field(default_factory=list)
    quarantines: list[Quarantine] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    edges: list[EdgeDecision] = field(default_factory=list)
    closings: list[EventClosing] = field(default_factory=list)
    suspicious_cursors: list[SuspiciousCursor] = field(default_factory=list)
    rows: int = 0
    unchanged: int = 0
    changed: int = 0
    new: int = 0
    quarantined: int = 0  # every held row read, including those held before and unchanged

    @property
    def writes_nothing(self) -> bool:
        """Nothing to store, audit or decide: most batches of a steady full pass."""
        return not (
            self.inserts
            or self.updates
            or self.trigger_writes
            or self.quarantines
            or self.releases
            or self.edges
            or self.closings
            or self.suspicious_cursors
        )


def plan_batch(
    rows: Sequence[SourceRow],
    stored: Mapping[str, StoredProperty],
    scope: PollScope,
    memory: PollMemory,
    now: datetime,
) -> BatchPlan:
    """Decide one batch; `stored` holds the remembered state of the batch's ids (facts too, for
    changed rows, when a rule reads `previous`)."""
    plan = BatchPlan(rows=len(rows))
    counts = Counter(row.identity for row in rows if isinstance(row.identity, str))
    memory.ambiguous.update(pid for pid, n in counts.items() if n > 1 or pid in memory.seen)
    if scope.cursor_index is not None:
        # Every row read counts for the checkpoint (the maximum read), held ones included.
        memory.cursor.offer_all([row.values[scope.cursor_index] for row in rows])
    screen = BatchScreen(scope.typer, [row.values for row in rows])
    row_plan = _RowPlanner(scope, memory, plan, now, screen)
    # Ids with rows held as repeated, read once per batch: looking them up per row would scan
    # every held key for every row, a cost that grows with the number of hostile rows held.
    # (Rows of this batch held as repeated belong to ambiguous ids, which never reach a release.)
    row_plan.repeated = repeated = repeated_ids(memory.held)
    # The common case inline (most rows of a full pass): an unchanged row whose trigger memory
    # is complete, of an id read once, not held and with no open readiness; exactly what
    # `take` decides for it (unchanged), without a call and a dozen attribute reads per row.
    quick, keys = row_plan.quick_skip, row_plan.memory_keys
    seen, ambiguous, open_events = memory.seen, memory.ambiguous, memory.open_events
    unchanged = 0
    for index, row in enumerate(rows):
        pid = row.identity
        if (
            quick
            and type(pid) is str
            and pid not in seen
            and pid not in ambiguous
            and pid not in repeated
            and pid not in open_events
        ):
            previous = stored.get(pid)
            if (
                previous is not None
                and previous.row_hash == row.digest
                and previous.remembers_keys(keys)
            ):
                seen.add(pid)
                unchanged += 1
                continue
        row_plan.index, row_plan.digest = index, row.digest
        row_plan.take(row, stored)
    plan.unchanged += unchanged
    for property_id in plan.releases:
        memory.held.pop(property_id, None)
    return plan


def row_identity(rows: Sequence[SourceRow], seen: set[str]) -> list[str | None]:
    """The id of each row, or None when it has none or repeats an id read before in the poll.

    Used by the service to know which stored properties a batch needs, before planning it.
    """
    ids: list[str | None] = []
    batch_seen: set[str] = set()
    for row in rows:
        property_id = row.identity
        if isinstance(property_id, RowProblem) or property_id in seen or property_id in batch_seen:
            ids.append(None)
            continue
        batch_seen.add(property_id)
        ids.append(property_id)
    return ids


class _RowPlanner:
    """Plans the rows of one batch; the per-row rules of the module docstring."""

    def __init__(
        self,
        scope: PollScope,
        memory: PollMemory,
        plan: BatchPlan,
        now: datetime,
        screen: BatchScreen,
    ) -> None:
        self.scope = scope
        self.screen = screen
        self.index = 0  # the row being planned, in the batch
        self.repeated: set[str] = set()  # ids with rows held as repeated (plan_batch sets it)
        self.digest = ""  # its fingerprint
        self.memory = memory
        self.plan = plan
        self.held = memory.held
        self.now = now
        self.analysis = scope.rules.analysis
        self.memory_keys = json_keys(self.analysis.names)
        self.evaluator = memory.evaluator_at(scope.rules, now, scope.zone)
        # Most rows of a poll are unchanged and need nothing at all: decided inline.
        self.quick_skip = scope.quick_skip

    def take(self, row: SourceRow, stored: Mapping[str, StoredProperty]) -> None:
        index = self.scope.cursor_index
        property_id = row.identity
        if isinstance(property_id, RowProblem):
            self._quarantine(f"#{row.digest}", row.digest, property_id)
            return
        if property_id in self.memory.ambiguous or property_id in self.memory.seen:
            self.memory.ambiguous.add(property_id)
            self.memory.seen.add(property_id)
            reason = (
                "several rows of the source query share this id; each is held until it is "
                "unique (no order is placed with either row's data)"
            )
            problem = RowProblem(property_id, "external_property_id", reason)
            self._quarantine(f"{property_id}{REPEAT_MARK}{row.digest[:16]}", row.digest, problem)
            return
        self.memory.seen.add(property_id)
        if property_id in self.repeated:
            # The id is unique again: its rows held as repeated are released.
            self.plan.releases.extend(self.memory.held_repeats(property_id))
        previous = stored.get(property_id)
        if previous is not None and previous.row_hash == row.digest:
            if self.quick_skip and previous.remembers_keys(self.memory_keys):
                self.plan.unchanged += 1
            else:
                self._isolated(property_id, row, self._reevaluate_unchanged, previous)
        else:
            value = row.values[index] if index is not None else None
            if not self.memory.cursor.counts(value):  # audited once per row version
                self.plan.suspicious_cursors.append(SuspiciousCursor(property_id, value))
            self._isolated(property_id, row, self._evaluate_changed, previous)
        if property_id in self.memory.open_events and self.held.get(property_id) != row.digest:
            self._isolated(property_id, row, self._replan_open, None)

    def _isolated(self, property_id: str, row: SourceRow, step: Any, previous: Any) -> None:
        """Run one row's step; an unexpected error quarantines the row, never the batch."""
        marks = self._marks()
        try:
            step(property_id, row, previous)
        except Exception as exc:  # noqa: BLE001 - one hostile row must not stop the others
            self._undo(marks)
            text = str(exc).splitlines()[0][:200] if str(exc) else ""
            problem = RowProblem(property_id, "*", f"unexpected {type(exc).__name__}: {text}")
            self._quarantine(property_id, row.digest, problem)

    def _reevaluate_unchanged(
        self, property_id: str, row: SourceRow, stored: StoredProperty
    ) -> None:
        """An unchanged row: only triggers whose value can change without the row are evaluated."""
        due = triggers_to_reevaluate(self.analysis, stored.triggers, full_pass=self.scope.full_pass)
        if not due:
            self.plan.unchanged += 1
            return
        snapshot = self.scope.typer.type_row(
            row.values, only=self.analysis.fields, property_id=property_id
        )
        if isinstance(snapshot, RowProblem):  # cannot happen for a row that passed before
            self.plan.unchanged += 1
            return
        # Unchanged since the last change: `previous` equals the current facts.
        values, _errors = self.evaluator.values(snapshot.facts, due, snapshot.facts)
        updates = detect_edges(stored.triggers, values, self.scope.first_sight)
        if not updates:
            self.plan.unchanged += 1
            return
        self.plan.trigger_writes.append(
            TriggerWrite(property_id, _merged(stored.triggers, updates))
        )
        if any(u.edge is not None for u in updates):
            # The rules may read any field.
            full = self.scope.typer.type_row(row.values, property_id=property_id)
            if isinstance(full, RowProblem):
                return
            self._decide(full, updates, full.facts)

    def _evaluate_changed(
        self, property_id: str, row: SourceRow, previous: StoredProperty | None
    ) -> None:
        """A new or changed row: evaluate every trigger, store the new state, decide edges."""
        unstorable = self.screen.problem(self.index)
        if unstorable is not None:
            self._quarantine(property_id, row.digest, RowProblem(property_id, *unstorable))
            return
        snapshot = self.scope.typer.type_row(row.values, property_id=property_id, screened=True)
        if isinstance(snapshot, RowProblem):
            self._quarantine(property_id, row.digest, snapshot)
            return
        if property_id in self.held:
            self.plan.releases.append(property_id)
        prior = (
            self.scope.typer.retype(previous.facts)
            if previous is not None and previous.facts
            else None
        )
        values, _errors = self.evaluator.values(snapshot.facts, self.analysis.names, prior)
        memory = previous.triggers if previous is not None else None
        if memory is None and self.scope.first_sight == "ignore":
            # A home seen for the first time (every home, on a first pass): no edge can fire.
            updates: list[TriggerUpdate] = []
            new_memory = {name: _FIRST_SIGHT[bool(value)] for name, value in values.items()}
        else:
            updates = detect_edges(memory, values, self.scope.first_sight)
            new_memory = _merged(memory or {}, updates)
        write = PropertyWrite(property_id, row.digest, self._remembered(snapshot), new_memory)
        if previous is None:
            self.plan.new += 1
            self.plan.inserts.append(write)
        else:
            self.plan.changed += 1
            self.plan.updates.append(write)
        self._decide(snapshot, updates, prior)

    def _replan_open(self, property_id: str, row: SourceRow, _previous: object) -> None:
        """Plan the home's open readiness events again, when what they were planned from changed.

        Each open event is looked at once per poll. It is closed instead when its trigger no
        longer holds (the home is not ready any more) or a newer readiness of the same trigger
        was decided in this batch.
        """
        events = self.memory.open_events.pop(property_id, [])
        basis = self.scope.basis(row.digest)
        stale = [event for event in events if event.plan_basis != basis]
        if not stale:
            return
        snapshot = self.scope.typer.type_row(row.values, property_id=property_id)
        if isinstance(snapshot, RowProblem):
            return  # held: planned again once the row is fixed
        fresh = {
            d.edge.trigger_name
            for d in self.plan.edges
            if d.event is None and d.snapshot.external_property_id == property_id
        }
        evaluation = EvaluationScope(
            snapshot.facts,
            self.now,
            self.scope.zone,
            previous=snapshot.facts,
            secrets=snapshot.secrets,
        )
        event_facts = facts_for_storage(snapshot.public_facts())
        for event in stale:
            trigger = self.scope.rules.triggers.get(event.edge.trigger_name)
            if event.edge.trigger_name in fresh:
                reason = "a newer readiness of the same trigger was decided"
            elif trigger is None:
                reason = "its trigger is no longer in the rules"
            elif not evaluation.is_true(trigger)[0]:
                reason = "its trigger no longer holds"
            else:
                decided = decide_edge(
                    self.scope,
                    snapshot,
                    event.edge,
                    evaluation,
                    event_facts,
                    attempt=event.plan_attempts,
                )
                why = replan_reason(event.plan_basis, basis)
                self.plan.edges.append(
                    replace(decided, event=event, replanned_because=why, basis=basis)
                )
                continue
            self.plan.closings.append(EventClosing(event, reason))

    def _remembered(self, snapshot: PropertySnapshot) -> dict[str, Any]:
        """Only what `previous` can read is kept (typed; the store encodes it)."""
        remembered = self.analysis.remembered
        if remembered is not None and not remembered:
            return {}
        public = snapshot.public_facts()
        if remembered is None:
            return public
        return {k: v for k, v in public.items() if k in remembered}

    def _decide(
        self,
        snapshot: PropertySnapshot,
        updates: Sequence[TriggerUpdate],
        previous: Mapping[str, Any] | None,
    ) -> None:
        edges = [u.edge for u in updates if u.edge is not None]
        if not edges:
            return
        # Only rows with an event pay for the full context and the JSON form of their facts.
        scope = EvaluationScope(
            snapshot.facts, self.now, self.scope.zone, previous=previous, secrets=snapshot.secrets
        )
        event_facts = facts_for_storage(snapshot.public_facts())
        basis = self.scope.basis(self.digest)
        for edge in edges:
            decided = decide_edge(self.scope, snapshot, edge, scope, event_facts)
            self.plan.edges.append(replace(decided, basis=basis))

    def _quarantine(self, key: str, digest: str, problem: RowProblem) -> None:
        """Hold a row; it is written (and audited) only when new or changed since last held."""
        self.plan.quarantined += 1
        if self.held.get(key) == digest:
            return
        self.plan.quarantines.append(Quarantine(key, digest, problem, known=key in self.held))
        self.held[key] = digest

    def _marks(self) -> tuple[int, ...]:
        plan = self.plan
        return (
            len(plan.inserts),
            len(plan.updates),
            len(plan.trigger_writes),
            len(plan.releases),
            len(plan.edges),
            len(plan.suspicious_cursors),
            len(plan.closings),
            plan.unchanged,
            plan.changed,
            plan.new,
        )

    def _undo(self, marks: tuple[int, ...]) -> None:
        """Forget what a failed row added to the plan, so none of it is written."""
        plan = self.plan
        del plan.inserts[marks[0] :]
        del plan.updates[marks[1] :]
        del plan.trigger_writes[marks[2] :]
        del plan.releases[marks[3] :]
        del plan.edges[marks[4] :]
        del plan.suspicious_cursors[marks[5] :]
        del plan.closings[marks[6] :]
        plan.unchanged, plan.changed, plan.new = marks[7:]


def decide_edge(
    scope: PollScope,
    snapshot: PropertySnapshot,
    edge: Edge,
    evaluation: EvaluationScope,
    event_facts: Mapping[str, Any],
    *,
    attempt: int = 0,
) -> EdgeDecision:
    """The rules' decision for one rising edge and, when it orders something, the request.

    `attempt`: orders already created for this readiness (a re-plan gets a new order id).
    """
    decision = decide(scope.rules, edge.trigger_name, evaluation)
    if not decision.orders_something:
        return EdgeDecision(snapshot, edge, event_facts, decision)
    try:
        plan = plan_order(
            snapshot, edge, decision, scope.catalog, scope.default_window_hours, attempt=attempt
        )
    except PlanProblem as exc:
        return EdgeDecision(snapshot, edge, event_facts, decision, problems=tuple(exc.problems))
    return EdgeDecision(snapshot, edge, event_facts, decision, plan)


def config_fingerprint(mode: str, window_hours: float, catalog: Catalog, query: str = "") -> str:
    """A digest of the configuration an order's plan depends on besides the rules and the row:
    the mode, the default window, the catalog and the source query (a column added to it)."""
    services = sorted(
        (
            s.slug,
            sorted(s.quantities),
            s.access_required,
            list(s.required_fields),
            sorted(s.prices_cents.items()),
            s.unit_price_cents,
        )
        for s in catalog.services.values()
    )
    data = json.dumps([mode, window_hours, services, query], default=str, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def replan_reason(before: str | None, now: str) -> str:
    """Which of the row, the rules and the configuration changed since the last plan."""
    old, new = basis_parts(before), basis_parts(now)
    if old is None or new is None:
        return "planned again"
    names = ("the home's row", "the rules", "the configuration")
    changed = [name for name, a, b in zip(names, old, new, strict=True) if a != b]
    return " and ".join(changed) + " changed" if changed else "planned again"


# The memory of a trigger at first sight (value remembered, no edge counted); shared instances.
_FIRST_SIGHT = {False: TriggerMemory(False, 0), True: TriggerMemory(True, 0)}


def _merged(
    memory: Mapping[str, TriggerMemory], updates: Sequence[TriggerUpdate]
) -> dict[str, TriggerMemory]:
    merged = dict(memory)
    merged.update({u.trigger_name: u.memory for u in updates})
    return merged
