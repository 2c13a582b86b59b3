"""Write-back: run the operator's statement once per delivered order (design.md 8.2).

One run (the daemon's `writeback` job, and every `run --once`) claims due rows of the
write-back outbox one at a time and, for each:

1. state database: lease the row (attempt counted), commit;
2. target: run the statement in its own transaction, commit;
3. state database: mark the row done and audit `writeback_done`, commit.

A failure in 2 marks the row failed, due again after a jittered exponential backoff, or
given up once it has been failing for `give_up_after_hours`; `writeback_failed` is audited with
the driver's first line (secrets masked) when a failure streak starts, when the reason changes
and when it gives up. A failed target is not tried again in the same run.

Crash safety: a process killed before the target's commit changed nothing there; one killed
between the target's commit and the state's leaves the row leased, and once the lease expires
the statement runs again. That second run is harmless only because the statement is
idempotent by design (an UPDATE that sets values, or an upsert keyed by :external_order_id):
the one effect the outbox cannot rule out is a repeated, identical write.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import structlog

from propready.adapters.database_urls import parse
from propready.adapters.database_urls import target as url_target
from propready.adapters.store import audit
from propready.adapters.store import writebacks as store
from propready.adapters.writeback_target import WritebackError, WritebackTarget
from propready.core.audit_kinds import AuditKind
from propready.core.writeback import (
    WritebackState,
    next_attempt_after_failure,
    should_audit_failure,
)
from propready.log import REDACTOR
from propready.service.components import Components, CycleSummary, crash_point
from propready.settings import Settings

log = structlog.get_logger("propready.writeback")

WRITES_PER_RUN = 500
LEASE_MARGIN_SECONDS = 30.0
Observer = Callable[[str], None]  # outcome: done | failed | given_up
TargetFactory = Callable[[Settings], WritebackTarget]


@dataclass
class WritebackRun:
    done: int = 0
    failed: int = 0
    given_up: int = 0
    lease_lost: int = 0


def open_target(settings: Settings) -> WritebackTarget:
    config = settings.writeback
    return WritebackTarget(
        config.url.get_secret_value(), config.timeout_seconds, secrets=settings.secret_values()
    )


def writeback_step(
    components: Components,
    now: Callable[[], datetime],
    summary: CycleSummary,
    *,
    observer: Observer | None = None,
) -> WritebackRun:
    """One write-back run for the daemon's job and `run --once`; counts go to `summary`."""
    run = run_writebacks(
        components.state,
        components.settings,
        components.owner,
        now,
        rng=components.jitter,
        observer=observer,
    )
    summary.writeback_done += run.done
    summary.writeback_failed += run.failed
    summary.writeback_given_up += run.given_up
    return run


def run_writebacks(
    state: sa.Engine,
    settings: Settings,
    owner: str,
    now: Callable[[], datetime],
    *,
    rng: random.Random | None = None,
    observer: Observer | None = None,
    open_target: TargetFactory = open_target,
    limit: int = WRITES_PER_RUN,
) -> WritebackRun:
    """Write back what is due, at most `limit` rows; nothing while `[writeback] url` is empty."""
    run = WritebackRun()
    config = settings.writeback
    if not config.enabled:
        return run
    rng = rng or random.Random()
    lease = config.timeout_seconds + LEASE_MARGIN_SECONDS
    target: WritebackTarget | None = None
    try:
        for _ in range(limit):
            with state.begin() as connection:
                row = store.claim_due(connection, owner, now(), lease)
            if row is None:
                return run
            if target is None:  # opened only when there is work: no idle connections to the PM
                target = open_target(settings)
            try:
                rows = target.execute(
                    config.statement,
                    row.params,
                    before_commit=lambda: crash_point("writeback_before_target_commit"),
                )
            except WritebackError as exc:
                outcome = _record_failure(state, settings, owner, row, str(exc), now(), rng)
                if outcome == WritebackState.GIVEN_UP:
                    run.given_up += 1
                else:
                    run.failed += 1
                if observer is not None:
                    observer(outcome.value)
                return run  # the target is failing: the other rows wait for the next run
            crash_point("writeback_after_target_commit")
            if _record_done(state, owner, row, rows, now()):
                run.done += 1
                if observer is not None:
                    observer("done")
            else:
                run.lease_lost += 1
    finally:
        if target is not None:
            target.close()
    return run


def _record_done(
    state: sa.Engine, owner: str, row: store.Writeback, rows: int, at: datetime
) -> bool:
    with state.begin() as connection:
        held = store.mark_done(connection, row.id, owner, at)
        if held:
            audit.record(
                connection,
                AuditKind.WRITEBACK_DONE,
                at,
                detail={"attempt": row.attempts, "rows": rows},
                external_property_id=row.params.external_property_id,
                order_id=row.order_id,
                external_order_id=row.external_order_id,
            )
    if held:
        log.info("writeback_done", order=row.external_order_id, attempt=row.attempts, rows=rows)
    else:
        # Another worker took the row over after this lease expired; it runs the (idempotent)
        # statement again and records the outcome.
        log.warning("writeback_lease_lost", order=row.external_order_id, attempt=row.attempts)
    return held


def _record_failure(
    state: sa.Engine,
    settings: Settings,
    owner: str,
    row: store.Writeback,
    error: str,
    at: datetime,
    rng: random.Random,
) -> WritebackState:
    error = REDACTOR.scrub_text(error)
    retry_at = next_attempt_after_failure(
        at, row.first_failed_at, row.attempts, settings.writeback.retry_policy, rng.random()
    )
    gave_up = retry_at is None
    with state.begin() as connection:
        held = store.mark_failed(connection, row.id, owner, at, error, retry_at)
        if held and should_audit_failure(row.first_failed_at, row.last_error, error, gave_up):
            detail: dict[str, object] = {
                "reason": error,
                "attempt": row.attempts,
                "gave_up": gave_up,
            }
            if retry_at is not None:
                detail["retry_at"] = retry_at.isoformat()
            audit.record(
                connection,
                AuditKind.WRITEBACK_FAILED,
                at,
                detail=detail,
                external_property_id=row.params.external_property_id,
                order_id=row.order_id,
                external_order_id=row.external_order_id,
            )
    (log.error if gave_up else log.warning)(
        "writeback_failed",
        order=row.external_order_id,
        attempt=row.attempts,
        error=error,
        gave_up=gave_up,
        retry_at=retry_at.isoformat() if retry_at else None,
    )
    return WritebackState.GIVEN_UP if gave_up else WritebackState.FAILED


# --- `propready writeback retry` ----------------------------------------------------------------


class WritebackRetryError(Exception):
    """The retry cannot be done; the message is one line for the operator."""


def request_retry(
    state: sa.Engine, external_order_id: str, reason: str, operator: str, at: datetime
) -> store.Writeback:
    """Make an order's write-back due now (audited `writeback_retry_requested`)."""
    with state.begin() as connection:
        row = store.find(connection, external_order_id)
        if row is None:
            raise WritebackRetryError(
                f"order {external_order_id}: no write-back queued (it is queued when the order "
                "is delivered and [writeback] url is set)"
            )
        if not store.request_retry(connection, row.id, at):
            if row.state == WritebackState.DONE:
                done = f" at {row.done_at:%Y-%m-%d %H:%M:%S} UTC" if row.done_at else ""
                raise WritebackRetryError(
                    f"order {external_order_id}: already written back{done}; "
                    "the statement runs once per order"
                )
            raise WritebackRetryError(
                f"order {external_order_id}: being written back right now (attempt "
                f"{row.attempts}); look again in a minute"
            )
        audit.record(
            connection,
            AuditKind.WRITEBACK_RETRY_REQUESTED,
            at,
            detail={
                "reason": reason,
                "operator": operator,
                "previous_state": row.state.value,
                "last_error": row.last_error,
            },
            external_property_id=row.params.external_property_id,
            order_id=row.order_id,
            external_order_id=row.external_order_id,
        )
    return row


# --- `propready check` ---------------------------------------------------------------------------


def check_lines(settings: Settings) -> list[tuple[str, bool | None, str]]:
    """The write-back line: off, or the target reachable and the statement running (in a
    transaction that is rolled back, with values that name no home)."""
    config = settings.writeback
    if not config.enabled:
        return [("writeback", True, "no url: write-back is off")]
    where = url_target(parse("writeback.url", config.url.get_secret_value()))
    target = open_target(settings)
    try:
        rows = target.probe(config.statement)
    except WritebackError as exc:
        return [("writeback", False, f"{where}: {REDACTOR.scrub_text(str(exc))}")]
    finally:
        target.close()
    detail = f"{where}: the statement runs (tried in a transaction that was rolled back)"
    if rows > 1:
        # The probe's values name no home: an upsert may insert its one row, but touching
        # more means the statement ignores them.
        return [
            (
                "writeback",
                None,
                f"{where}: the statement touched {rows} row(s) with values that name no home "
                "(rolled back); does its WHERE use :external_property_id or :external_order_id?",
            )
        ]
    return [("writeback", True, detail)]
