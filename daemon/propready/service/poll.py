"""Poll: read the source, decide each batch with the pure core, write what it decided.

A poll is *full* (the whole source query) or *incremental* (rows whose `cursor_column` is at or
after the checkpoint minus an overlap window, for late commits and equal timestamps). For each
batch of rows: stream -> load what the state database remembers of those homes -> plan
(core/batch_plan.py, no I/O and no database lock held) -> write the plan, the events, decisions,
orders and audit rows in one transaction. Only one process polls at a time (a PostgreSQL advisory
lock, or a lock file beside a SQLite database), so nothing changes the remembered state between
the read and the write.

The checkpoint is the largest cursor value read, ignoring values later than now plus
`cursor_future_tolerance_seconds` (audited as suspicious): an incremental poll, which reads in
cursor order, moves it with each batch; a full pass, which reads in the source's order, moves it
once, when it has read everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from propready.adapters.prefetch import prefetched
from propready.adapters.source import (
    SourceBatch,
    homes_query,
    incremental_query,
    repeated_property_ids,
    stream_batches,
)
from propready.adapters.store import audit, properties
from propready.adapters.store.engine import reader, reading
from propready.core.audit_kinds import AuditKind
from propready.core.batch_plan import (
    REPEAT_MARK,
    BatchPlan,
    PollMemory,
    PollScope,
    SourceRow,
    fingerprint,
    plan_batch,
    repeated_ids,
    row_identity,
    source_rows,
)
from propready.core.checkpoint import (
    Checkpoint,
    CursorTracker,
    encode_cursor,
    larger,
    minus_overlap,
)
from propready.core.facts import RowTyper
from propready.core.model import basis_parts
from propready.service import checkpoints
from propready.service.components import Components, CycleSummary
from propready.service.decide import record_decisions

log = structlog.get_logger("propready.poll")

# Homes read by id per query when open readiness events are planned again (IN-list size).
REPLAN_CHUNK = 500


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
        with reading(components.state) as connection:
            checkpoint = properties.load_checkpoint(connection, checkpoints.CHECKPOINT)
        if tick is not None:
            plan = checkpoints.plan_tick(components.settings.source, checkpoint, now(), tick)
            if plan.skip_reason is not None:
                summary.poll_skipped = True
                log.info("poll_skipped", reason=plan.skip_reason, tick=tick)
                return
            full_pass = plan.full_pass
        if full_pass is None:
            full_pass = checkpoints.full_pass_due(components.settings.source, checkpoint, now())
        _PollRun(components, now, summary, checkpoint, full_pass).run()


class _PollRun:
    """One poll: its checkpoint, what it carries from batch to batch, and its counters."""

    def __init__(
        self,
        components: Components,
        now: Callable[[], datetime],
        summary: CycleSummary,
        checkpoint: Checkpoint,
        full_pass: bool,
    ) -> None:
        self.components = components
        self.now = now
        self.summary = summary
        self.checkpoint = checkpoint
        self.full_pass = full_pass
        self.started = now()
        source = components.settings.source
        tolerance = timedelta(seconds=source.cursor_future_tolerance_seconds)
        with reading(components.state) as connection:
            held = properties.load_quarantine(connection)
            open_events = properties.load_open_events(connection)
        cursor = CursorTracker(self.started + tolerance, source.zone)
        # Ids several rows share: a full pass asks the source; between full passes the ids held
        # as repeated stay held.
        ambiguous = (
            repeated_property_ids(components.source, source.query)
            if full_pass
            else repeated_ids(held)
        )
        self.memory = PollMemory(cursor, held, open_events=open_events, ambiguous=ambiguous)
        self.scope: PollScope | None = None
        self.saved_cursor = checkpoint.cursor
        summary.full_pass = full_pass

    def run(self) -> None:
        source = self.components.settings.source
        query, params = source.query, {}
        if not self.full_pass:
            assert source.cursor_column is not None
            query = incremental_query(source.query, source.cursor_column)
            since = minus_overlap(self.checkpoint.cursor, source.cursor_overlap_seconds)
            params = {"since": since}
        batches = stream_batches(self.components.source, query, source.batch_size, params)
        # A pipeline of three threads, each mostly waiting on a database: one streams the
        # source, one identifies the next batch's rows and loads their remembered state, and
        # this one decides and writes the current batch (batches never share a home: a
        # repeated id is held). The stream stays in its own thread, as a cursor must.
        for prepared in prefetched(self._prepared(prefetched(batches, depth=1))):
            self._decide_and_write(*prepared)
            if self.components.stop_requested.is_set():
                # Every batch committed with its effects; the next poll carries on from there.
                self.summary.poll_interrupted = True
                log.info(
                    "poll_interrupted", reason="the daemon is stopping", rows=self.summary.rows
                )
                return
        if not self.full_pass:
            self._replan_unread()
        self._finish()

    def _replan_unread(self) -> None:
        """Open readiness events of homes this incremental poll did not read, planned again when
        the rules or the configuration changed since their last plan (a full pass reads every
        home; a change of the row itself comes with the row)."""
        if self.scope is None:
            return
        current = (self.scope.rules.version, self.scope.config_fingerprint)
        stale = sorted(
            property_id
            for property_id, events in self.memory.open_events.items()
            if any((basis_parts(e.plan_basis) or ("", "", ""))[1:] != current for e in events)
        )
        # These homes are read out of cursor order: their values must not move the checkpoint.
        scope = replace(self.scope, cursor_index=None)
        source = self.components.settings.source
        for start in range(0, len(stale), REPLAN_CHUNK):
            chunk = stale[start : start + REPLAN_CHUNK]
            query, names = homes_query(source.query, len(chunk))
            params = dict(zip(names, chunk, strict=True))
            for batch in stream_batches(self.components.source, query, source.batch_size, params):
                self._batch(batch, scope)

    def _scope_for(self, columns: Sequence[str]) -> PollScope:
        if self.scope is None:
            settings = self.components.settings
            source = settings.source
            typer = RowTyper(
                columns,
                source.zone,
                source.types,
                check_encoding=self.components.source.dialect.name == "sqlite",
                secret_columns=source.secret_columns,
            )
            cursor = source.cursor_column
            self.scope = PollScope(
                rules=self.components.rules,
                typer=typer,
                catalog=self.components.catalog,
                zone=source.zone,
                first_sight=settings.orders.first_sight,
                default_window_hours=settings.orders.duplicate_window_hours,
                full_pass=self.full_pass,
                cursor_index=list(columns).index(cursor) if cursor and cursor in columns else None,
                config_fingerprint=self.components.plan_fingerprint(),
            )
        return self.scope

    def _batch(self, batch: SourceBatch, scope: PollScope | None = None) -> None:
        with reader(self.components.state) as connection:
            prepared = self._prepare(connection, batch, scope)
        self._decide_and_write(*prepared)

    def _prepared(
        self, batches: Iterator[SourceBatch]
    ) -> Iterator[tuple[PollScope, list[SourceRow], dict[str, Any]]]:
        # One state connection for the whole pass, one short read transaction per batch.
        try:
            with reader(self.components.state) as connection:
                for batch in batches:
                    yield self._prepare(connection, batch)
        finally:
            # Stopped early (the daemon stopping, an error): end the stream's thread and its
            # read now, not when this generator happens to be collected.
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _prepare(
        self, connection: sa.Connection, batch: SourceBatch, scope: PollScope | None = None
    ) -> tuple[PollScope, list[SourceRow], dict[str, Any]]:
        """A batch's rows with their ids and fingerprints, and what is remembered of them."""
        scope = scope or self._scope_for(batch.columns)
        digests = batch.fingerprints or [fingerprint(values) for values in batch.rows]
        rows = source_rows(scope.typer, batch.rows, digests)
        with connection.begin():
            return scope, rows, self._load_stored(connection, scope, rows)

    def _decide_and_write(
        self, scope: PollScope, rows: list[SourceRow], stored: dict[str, Any]
    ) -> None:
        now = self.now()
        plan = plan_batch(rows, stored, scope, self.memory, now)
        moves_cursor = not self.full_pass and scope.cursor_index is not None
        if plan.writes_nothing and not moves_cursor:
            _count(self.summary, plan)
            return  # no transaction at all: a steady pass would open 200 empty ones
        state = self.components.state
        with state.begin() as connection, audit.buffered(connection):
            _write_plan(connection, plan, now)
            record_decisions(
                self.components, connection, plan.edges, now, self.summary, plan.closings
            )
            if moves_cursor:
                self._advance_cursor(connection)
        _count(self.summary, plan)

    def _load_stored(
        self, connection: sa.Connection, scope: PollScope, rows: Sequence[SourceRow]
    ) -> dict[str, Any]:
        """What the state database remembers of the batch's homes (facts only where needed)."""
        ids = row_identity(rows, self.memory.seen)
        wanted = [i for i in ids if i is not None]
        remembered = scope.rules.analysis.remembered
        # When an unchanged row needs nothing (scope.quick_skip), its fingerprint and whether
        # its memory is complete are all there is to read; rows that changed, or whose memory
        # misses a trigger, are then read again whole, with their facts when a rule reads
        # `previous` (for those rows only, not everyone's).
        keys = scope.rules.analysis.names if scope.quick_skip else None
        stored = properties.load_properties(
            connection, wanted, with_facts=False, complete_keys=keys
        )
        with_facts = remembered is None or bool(remembered)
        again = [
            pid
            for pid, row in zip(ids, rows, strict=True)
            if pid is not None
            and pid in stored
            and (
                stored[pid].row_hash != row.digest
                or (stored[pid].complete is not None and not stored[pid].complete)
            )
        ]
        if again and (with_facts or keys is not None):
            stored.update(properties.load_properties(connection, again, with_facts=with_facts))
        return stored

    def _advance_cursor(self, connection: sa.Connection) -> None:
        maximum = self.memory.cursor.maximum
        if maximum is None:
            return
        moved = larger(self.saved_cursor, maximum)
        if moved is not self.saved_cursor:
            properties.save_checkpoint(
                connection, checkpoints.CHECKPOINT, cursor_value=encode_cursor(moved)
            )
            self.saved_cursor = moved

    def _finish(self) -> None:
        values: dict[str, Any] = {
            "last_poll_at": self.started,
            "last_success_at": self.now(),
            "last_error": None,
            "consecutive_failures": 0,
        }
        if self.full_pass:
            values["last_full_pass_at"] = self.started
            if self.memory.cursor.maximum is not None:
                # The pass read every row: the largest sensible value read is the checkpoint,
                # even if an older checkpoint (a placeholder date read before) was larger.
                values["cursor_value"] = encode_cursor(self.memory.cursor.maximum)
        with self.components.state.begin() as connection:
            properties.save_checkpoint(connection, checkpoints.CHECKPOINT, **values)
            if self.checkpoint.consecutive_failures:  # the outage that opened is over
                audit.record(
                    connection,
                    AuditKind.SOURCE_RECOVERED,
                    self.now(),
                    detail={
                        "failed_polls": self.checkpoint.consecutive_failures,
                        "last_error": self.checkpoint.last_error,
                    },
                )


def _write_plan(connection: sa.Connection, plan: BatchPlan, now: datetime) -> None:
    """The batch's property state, trigger memory and quarantine, with their audit rows."""
    properties.insert_properties(connection, plan.inserts, now)
    properties.update_changed_properties(connection, plan.updates, now)
    properties.update_trigger_memory(connection, plan.trigger_writes)
    properties.save_quarantines(connection, plan.quarantines, now)
    for held in plan.quarantines:
        problem = held.problem
        log.warning(
            "source_row_quarantined",
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
    properties.release_quarantine(connection, plan.releases)
    for key in plan.releases:
        repeated = REPEAT_MARK in key
        audit.record(
            connection,
            AuditKind.SOURCE_ROW_RELEASED,
            now,
            external_property_id=key.split(REPEAT_MARK, 1)[0] if repeated else key,
            detail={
                "reason": "the id is unique again"
                if repeated
                else "the row changed and now passes every check"
            },
        )
    for suspicious in plan.suspicious_cursors:
        log.warning(
            "source_cursor_suspicious",
            property=suspicious.external_property_id,
            value=str(suspicious.value)[:60],
        )
        audit.record(
            connection,
            AuditKind.SOURCE_CURSOR_SUSPICIOUS,
            now,
            external_property_id=suspicious.external_property_id,
            detail={
                "value": str(suspicious.value)[:60],
                "reason": "the cursor value is not a time or lies too far in the future; "
                "the row is processed but the checkpoint does not move to it",
            },
        )


def _count(summary: CycleSummary, plan: BatchPlan) -> None:
    summary.rows += plan.rows
    summary.quarantined += plan.quarantined
    summary.new_properties += plan.new
    summary.changed += plan.changed
    summary.unchanged += plan.unchanged
