"""Poll: read the source, record trigger edges, decide each new readiness event, plan orders.

A poll is *full* (the whole source query) or *incremental* (rows whose `cursor_column` is at or
after the checkpoint minus an overlap window, for late commits and equal timestamps). Each batch
of rows is one transaction: trigger memory, events, decisions, outbox rows, quarantine, the
checkpoint and their audit rows commit together, so the checkpoint only moves past rows whose
effects are stored.

The hot path is an unchanged row: it is recognised by a fingerprint of its raw values and
skipped without typing or evaluating it, except for the triggers whose value can change anyway
(time-based ones on full passes, change-based ones that must fall back; see TriggerAnalysis).
Trigger evaluation converts only the fields the triggers read into CEL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog

from propready.adapters.source import SourceBatch, incremental_query, stream_batches
from propready.adapters.store import audit, properties
from propready.core.audit_kinds import AuditKind
from propready.core.expressions import EvaluationScope, Expression
from propready.core.facts import RowProblem, RowTyper, facts_for_storage
from propready.core.model import PropertySnapshot
from propready.core.rules import RuleSet, trigger_values
from propready.core.triggers import (
    TriggerAnalysis,
    analyse_triggers,
    detect_edges,
    triggers_to_reevaluate,
)
from propready.service import checkpoints
from propready.service.components import Components, CycleSummary
from propready.service.decide import handle_edge

log = structlog.get_logger("propready.poll")


_ANALYSES: dict[str, TriggerAnalysis] = {}


def _analysis(rules: RuleSet) -> TriggerAnalysis:
    """The trigger analysis of a rule set, computed once per rules version."""
    analysis = _ANALYSES.get(rules.version)
    if analysis is None:
        if len(_ANALYSES) > 16:  # reloads over a long run must not grow this without bound
            _ANALYSES.clear()
        rule_expressions = [
            expression.source
            for rule in rules.rules
            for expression in (rule.when, *(s.quantity for s in rule.services))
            if isinstance(expression, Expression)
        ]
        analysis = analyse_triggers(
            {name: e.source for name, e in rules.triggers.items()}, rule_expressions
        )
        _ANALYSES[rules.version] = analysis
    return analysis


def fingerprint(values: Sequence[Any]) -> str:
    """A digest of a raw row, stable across processes (PostgreSQL sources compute their own)."""
    return hashlib.blake2b(repr(tuple(values)).encode(), digest_size=16).hexdigest()


@dataclass
class PollState:
    """What one poll carries from batch to batch."""

    full_pass: bool
    seen: set[str] = field(default_factory=set)
    cursor_index: int | None = None
    last_cursor: Any = None


def poll(
    components: Components,
    now: Callable[[], datetime],
    summary: CycleSummary,
    *,
    full_pass: bool | None = None,
    tick: checkpoints.Tick | None = None,
) -> None:
    """Run one poll; full or incremental as the checkpoint and settings decide (or `full_pass`).

    Only one process polls at a time; a process that finds a poll running skips its own. A
    scheduled `tick` is also skipped when another host already polled for it (the shared
    checkpoint says when), so hosts sharing a state database poll once per interval between them.
    """
    with properties.exclusive_poll(components.state) as mine:
        if not mine:
            summary.poll_skipped = True
            log.info("poll_skipped", reason="another process is polling")
            return
        with components.state.begin() as connection:
            checkpoint = properties.load_checkpoint(connection, checkpoints.CHECKPOINT)
        if tick is not None:
            plan = checkpoints.plan_tick(components.settings.source, checkpoint, now(), tick)
            if plan.skip_reason is not None:
                summary.poll_skipped = True
                log.info("poll_skipped", reason=plan.skip_reason, tick=tick)
                return
            full_pass = plan.full_pass
        _poll(components, now, summary, checkpoint, full_pass)


def _poll(
    components: Components,
    now: Callable[[], datetime],
    summary: CycleSummary,
    checkpoint: Mapping[str, Any],
    full_pass: bool | None,
) -> None:
    source = components.settings.source
    if full_pass is None:
        full_pass = checkpoints.full_pass_due(components, checkpoint, now())
    query, params = source.query, {}
    if not full_pass:
        assert source.cursor_column is not None
        query = incremental_query(source.query, source.cursor_column)
        since = checkpoints.decode_cursor(checkpoint["cursor_value"])
        params = {"since": checkpoints.minus_overlap(since, source.cursor_overlap_seconds)}
    state = PollState(full_pass=full_pass)
    summary.full_pass = full_pass
    started = now()
    typer: RowTyper | None = None
    for batch in stream_batches(components.source, query, source.batch_size, params):
        if typer is None:
            typer = RowTyper(
                batch.columns,
                source.zone,
                source.types,
                check_encoding=components.source.dialect.name == "sqlite",
            )
            if source.cursor_column is not None and source.cursor_column in batch.columns:
                state.cursor_index = batch.columns.index(source.cursor_column)
        _process_batch(components, typer, batch, now(), summary, state)
        if components.stop_requested.is_set():
            # Every batch committed with its checkpoint; the next poll carries on from there.
            summary.poll_interrupted = True
            log.info("poll_interrupted", reason="the daemon is stopping", rows=summary.rows)
            return
    with components.state.begin() as connection:
        values: dict[str, Any] = {"last_poll_at": started, "last_success_at": now()}
        values.update(last_error=None, consecutive_failures=0)
        if full_pass:
            values["last_full_pass_at"] = started
        properties.save_checkpoint(connection, checkpoints.CHECKPOINT, **values)


def _process_batch(
    components: Components,
    typer: RowTyper,
    batch: SourceBatch,
    now: datetime,
    summary: CycleSummary,
    state: PollState,
) -> None:
    rules = components.rules
    analysis = _analysis(rules)
    rows: list[tuple[str, str, Sequence[Any]]] = []
    problems: list[tuple[str, str, RowProblem]] = []
    digests = batch.fingerprints or [fingerprint(values) for values in batch.rows]
    for values, digest in zip(batch.rows, digests, strict=True):
        summary.rows += 1
        property_id = typer.property_id(values)
        if isinstance(property_id, RowProblem):
            problems.append((f"#{digest}", digest, property_id))
        elif property_id in state.seen:
            reason = "the source query returned this id more than once; the first row is used"
            problems.append(
                (
                    f"{property_id}#dup",
                    digest,
                    RowProblem(property_id, "external_property_id", reason),
                )
            )
        else:
            state.seen.add(property_id)
            rows.append((property_id, digest, values))
        if state.cursor_index is not None and values[state.cursor_index] is not None:
            state.last_cursor = values[state.cursor_index]
    with components.state.begin() as connection, audit.buffered(connection):
        stored = properties.load_properties(connection, [r[0] for r in rows], with_facts=False)
        changed_ids = [
            pid for pid, digest, _ in rows if pid not in stored or stored[pid].row_hash != digest
        ]
        if changed_ids and (analysis.remembered is None or analysis.remembered):
            # `previous` is read only for rows that changed: load their facts, not everyone's.
            stored.update(properties.load_properties(connection, changed_ids, with_facts=True))
        # Most rows of a poll are unchanged and need nothing at all: decide that inline.
        quick_skip = not analysis.change_based and not (state.full_pass and analysis.time_based)
        held = properties.quarantined(connection, [key for key, _, _ in problems] + changed_ids)
        writes = _BatchWrites()
        for key, digest, problem in problems:
            _quarantine(connection, key, digest, problem, held, now, summary)
        for property_id, digest, values in rows:
            previous = stored.get(property_id)
            if previous is not None and previous.row_hash == digest:
                if quick_skip and previous.remembers_all(analysis.names):
                    summary.unchanged += 1
                    continue
                _reevaluate_unchanged(
                    components,
                    connection,
                    typer,
                    analysis,
                    property_id,
                    values,
                    previous,
                    now,
                    summary,
                    writes,
                    state.full_pass,
                )
                continue
            snapshot = typer.type_row(values)
            if isinstance(snapshot, RowProblem):
                _quarantine(connection, property_id, digest, snapshot, held, now, summary)
                continue
            if property_id in held:
                writes.released.append(property_id)
            _evaluate_changed(
                components,
                connection,
                typer,
                analysis,
                snapshot,
                digest,
                previous,
                now,
                summary,
                writes,
            )
        writes.flush(connection, now)
        if not state.full_pass and state.last_cursor is not None:
            properties.save_checkpoint(
                connection,
                checkpoints.CHECKPOINT,
                cursor_value=checkpoints.encode_cursor(state.last_cursor),
            )
        elif (
            state.full_pass
            and state.last_cursor is not None
            and components.settings.source.cursor_column
        ):
            # A full pass reads in source order, not cursor order: only the maximum is safe.
            checkpoints.advance_cursor_to_max(connection, state.last_cursor)


@dataclass
class _BatchWrites:
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    trigger_updates: list[dict[str, Any]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def flush(self, connection: sa.Connection, now: datetime) -> None:
        properties.insert_properties(connection, self.inserts)
        properties.update_changed_properties(connection, self.updates)
        properties.update_trigger_memory(connection, self.trigger_updates)
        if self.released:
            properties.release_quarantine(connection, self.released)
            for property_id in self.released:
                audit.record(
                    connection,
                    AuditKind.SOURCE_ROW_RELEASED,
                    now,
                    external_property_id=property_id,
                    detail={"reason": "the row changed and now passes every check"},
                )


def _quarantine(
    connection: sa.Connection,
    key: str,
    digest: str,
    problem: RowProblem,
    held: Mapping[str, str],
    now: datetime,
    summary: CycleSummary,
) -> None:
    """Quarantine a row; audit it only when it is new or changed since it was last quarantined."""
    summary.quarantined += 1
    if held.get(key) == digest:
        return
    properties.quarantine_row(
        connection, key, digest, problem.column, problem.reason, now, known=key in held
    )
    log.warning(
        AuditKind.SOURCE_ROW_QUARANTINED,
        property=problem.external_property_id,
        column=problem.column,
        reason=problem.reason,
    )
    audit.record(
        connection,
        AuditKind.SOURCE_ROW_QUARANTINED,
        now,
        external_property_id=problem.external_property_id,
        detail={"column": problem.column, "reason": problem.reason},
    )


def _evaluate_changed(
    components: Components,
    connection: sa.Connection,
    typer: RowTyper,
    analysis: TriggerAnalysis,
    snapshot: PropertySnapshot,
    digest: str,
    previous: properties.StoredProperty | None,
    now: datetime,
    summary: CycleSummary,
    writes: _BatchWrites,
) -> None:
    """A new or changed row: evaluate every trigger, store the new state, handle rising edges."""
    settings = components.settings
    property_id = snapshot.external_property_id
    prior = typer.retype(previous.facts) if previous is not None and previous.facts else None
    values, errors = _trigger_values(
        components, analysis, snapshot.facts, analysis.names, now, prior
    )
    memory = previous.triggers if previous is not None else None
    updates = detect_edges(memory, values, settings.orders.first_sight)
    new_memory = dict(memory or {})
    new_memory.update({u.trigger_name: u.memory for u in updates})
    record = {
        "row_hash": digest,
        # Only what `previous` can read is kept (typed; the store encodes it).
        "facts": _remembered_facts(snapshot, analysis),
        "triggers": properties.encode_triggers(new_memory),
    }
    if previous is None:
        summary.new_properties += 1
        writes.inserts.append(
            {
                "external_property_id": property_id,
                "first_seen_at": now,
                "last_changed_at": now,
                **record,
            }
        )
    else:
        summary.changed += 1
        writes.updates.append({"pid": property_id, "last_changed_at": now, **record})
    _handle_edges(components, connection, snapshot, updates, now, summary, errors, prior)


def _remembered_facts(snapshot: PropertySnapshot, analysis: TriggerAnalysis) -> dict[str, Any]:
    public = snapshot.public_facts()
    if analysis.remembered is None:
        return public
    return {k: v for k, v in public.items() if k in analysis.remembered}


def _reevaluate_unchanged(
    components: Components,
    connection: sa.Connection,
    typer: RowTyper,
    analysis: TriggerAnalysis,
    property_id: str,
    values: Sequence[Any],
    stored: properties.StoredProperty,
    now: datetime,
    summary: CycleSummary,
    writes: _BatchWrites,
    full_pass: bool,
) -> None:
    """An unchanged row: only triggers whose value can change without the row are evaluated."""
    due = triggers_to_reevaluate(analysis, stored.triggers, full_pass=full_pass)
    if not due:
        summary.unchanged += 1
        return
    snapshot = typer.type_row(values, only=analysis.fields)
    if isinstance(snapshot, RowProblem):  # cannot happen for a row that passed before; be safe
        summary.unchanged += 1
        return
    # Unchanged since the last change: `previous` equals the current facts for change triggers.
    current, errors = _trigger_values(
        components, analysis, snapshot.facts, due, now, snapshot.facts
    )
    updates = detect_edges(stored.triggers, current, components.settings.orders.first_sight)
    if not updates:
        summary.unchanged += 1
        return
    new_memory = dict(stored.triggers)
    new_memory.update({u.trigger_name: u.memory for u in updates})
    writes.trigger_updates.append(
        {"pid": property_id, "triggers": properties.encode_triggers(new_memory)}
    )
    if any(u.edge is not None for u in updates):
        full = typer.type_row(values)  # the rules may read any field
        if isinstance(full, RowProblem):
            return
        # The row did not change since the last poll: `previous` is the current row.
        _handle_edges(components, connection, full, updates, now, summary, errors, full.facts)


def _trigger_values(
    components: Components,
    analysis: TriggerAnalysis,
    facts: Mapping[str, Any],
    names: frozenset[str],
    now: datetime,
    previous: Mapping[str, Any] | None,
) -> tuple[dict[str, bool], dict[str, str]]:
    narrow = (
        facts if analysis.fields is None else {k: facts[k] for k in analysis.fields if k in facts}
    )
    scope = EvaluationScope(narrow, now, components.settings.source.zone, previous=previous)
    return trigger_values(components.rules, scope, names)


def _handle_edges(
    components: Components,
    connection: sa.Connection,
    snapshot: PropertySnapshot,
    updates: Sequence[Any],
    now: datetime,
    summary: CycleSummary,
    errors: dict[str, str],
    previous: Mapping[str, Any] | None,
) -> None:
    edges = [u.edge for u in updates if u.edge is not None]
    if not edges:
        return
    # Only rows with an event pay for the full context and the JSON form of their facts.
    scope = EvaluationScope(snapshot.facts, now, components.settings.source.zone, previous=previous)
    stored_facts = facts_for_storage(snapshot.public_facts())
    for edge in edges:
        handle_edge(
            components, connection, snapshot, edge, scope, stored_facts, now, summary, errors
        )
