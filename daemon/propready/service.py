"""The service layer: the only place that sequences I/O.

One cycle is poll -> readiness events -> decisions -> outbox -> send. Each step's state change
and its audit rows commit in one transaction; the vendor call sits between two commits
(reliability.md, atomic phases), so a crash anywhere leaves a state the recovery pass can finish.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from propready.adapters.planomatic import (
    PlanomaticClient,
    VendorAmbiguous,
    VendorNotReached,
    VendorRejected,
)
from propready.adapters.source import stream_rows
from propready.adapters.store import audit, outbox, properties
from propready.core.catalog import Catalog
from propready.core.expressions import EvaluationScope
from propready.core.facts import RowProblem, facts_for_storage, type_row
from propready.core.model import Decision, Edge, PropertySnapshot
from propready.core.orders import OrderState
from propready.core.planning import PlanProblem, plan_order
from propready.core.rules import RuleSet, decide, trigger_values
from propready.core.triggers import detect_edges
from propready.settings import Settings

log = structlog.get_logger("propready.service")

LEASE_SECONDS = 300.0


class Pacer:
    """Evenly spaced sends: any 60 s window holds at most `per_minute` requests, without bursts.

    One process only; the shared, cross-host limiter is the [orders] issue's work.
    """

    def __init__(self, per_minute: int, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 60.0 / per_minute
        self._sleep = sleep
        self._last = -self.interval

    def wait(self) -> None:
        delay = self._last + self.interval - time.monotonic()
        if delay > 0:
            self._sleep(delay)
        self._last = time.monotonic()


@dataclass
class Components:
    """Everything a cycle needs, wired once by the composition root (`propready.wiring`)."""

    settings: Settings
    state: sa.Engine
    source: sa.Engine
    rules: RuleSet
    catalog: Catalog
    client: PlanomaticClient | None  # None in dry_run: nothing may be sent
    owner: str = "propready"
    pacer: Pacer = field(default_factory=lambda: Pacer(50))
    jitter: random.Random = field(default_factory=random.Random)


@dataclass
class CycleSummary:
    rows: int = 0
    quarantined: int = 0
    new_properties: int = 0
    events: int = 0
    ordered: int = 0
    not_ordered: int = 0
    blocked: int = 0
    invalid: int = 0
    orders_created: int = 0
    sent: int = 0
    placed: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    recovered: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def run_cycle(components: Components, now: Callable[[], datetime]) -> CycleSummary:
    """One full cycle: recover, poll and decide, then send what is due."""
    summary = CycleSummary()
    started = time.monotonic()
    recover(components, now(), summary)
    poll(components, now, summary)
    send_due(components, now, summary)
    log.info("cycle", duration_ms=round((time.monotonic() - started) * 1000), **summary.as_dict())
    return summary


# --- poll ------------------------------------------------------------------------------------


def poll(components: Components, now: Callable[[], datetime], summary: CycleSummary) -> None:
    """Read the whole source, record trigger edges, and decide each new readiness event."""
    source = components.settings.source
    batch: list[PropertySnapshot] = []
    for item in _typed_rows(
        stream_rows(components.source, source.query, source.batch_size), components, summary
    ):
        if isinstance(item, RowProblem):
            _quarantine(components, item, now())
            continue
        batch.append(item)
        if len(batch) >= source.batch_size:
            _process_batch(components, batch, now(), summary)
            batch = []
    if batch:
        _process_batch(components, batch, now(), summary)


def _typed_rows(
    rows: Iterable[Any], components: Components, summary: CycleSummary
) -> Iterator[PropertySnapshot | RowProblem]:
    zone = components.settings.source.zone
    seen: set[str] = set()
    for row in rows:
        summary.rows += 1
        item = type_row(row, zone)
        if isinstance(item, PropertySnapshot):
            if item.external_property_id in seen:
                item = RowProblem(
                    item.external_property_id,
                    "external_property_id",
                    "the source query returned this id twice",
                )
            else:
                seen.add(item.external_property_id)
        if isinstance(item, RowProblem):
            summary.quarantined += 1
        yield item


def _quarantine(components: Components, problem: RowProblem, now: datetime) -> None:
    log.warning(
        "source_row_quarantined",
        property=problem.external_property_id,
        column=problem.column,
        reason=problem.reason,
    )
    with components.state.begin() as connection:
        audit.record(
            connection,
            "source_row_quarantined",
            now,
            external_property_id=problem.external_property_id,
            detail={"column": problem.column, "reason": problem.reason},
        )


def _row_hash(facts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def _process_batch(
    components: Components, batch: list[PropertySnapshot], now: datetime, summary: CycleSummary
) -> None:
    settings = components.settings
    ids = [s.external_property_id for s in batch]
    with components.state.begin() as connection:
        memory = properties.load_trigger_memory(connection, ids)
        hashes = properties.load_row_hashes(connection, ids)
        for snapshot in batch:
            property_id = snapshot.external_property_id
            stored = facts_for_storage(snapshot.public_facts())
            row_hash = _row_hash(facts_for_storage(dict(snapshot.facts)))
            is_new = property_id not in memory
            previous = memory.get(property_id)
            if is_new:
                summary.new_properties += 1
            if is_new or hashes.get(property_id) != row_hash:
                properties.save_property(
                    connection, property_id, row_hash, stored, now, is_new=is_new, changed=True
                )
            scope = EvaluationScope(snapshot.facts, now, settings.source.zone)
            values, errors = trigger_values(components.rules, scope)
            updates = detect_edges(previous, values, settings.orders.first_sight)
            properties.save_trigger_updates(connection, property_id, updates, previous or {}, now)
            for update in updates:
                if update.edge is not None:
                    _handle_edge(
                        components,
                        connection,
                        snapshot,
                        update.edge,
                        scope,
                        stored,
                        now,
                        summary,
                        errors,
                    )


def _handle_edge(
    components: Components,
    connection: sa.Connection,
    snapshot: PropertySnapshot,
    edge: Edge,
    scope: EvaluationScope,
    stored_facts: dict[str, Any],
    now: datetime,
    summary: CycleSummary,
    trigger_errors: dict[str, str],
) -> None:
    property_id = snapshot.external_property_id
    event_id = properties.insert_readiness_event(connection, property_id, edge, stored_facts, now)
    if event_id is None:
        return  # this edge was stored by an earlier, overlapping poll
    summary.events += 1
    rules = components.rules
    common: dict[str, Any] = {
        "external_property_id": property_id,
        "trigger_name": edge.trigger_name,
        "rules_version": rules.version,
        "event_id": event_id,
    }
    audit.record(
        connection,
        "trigger_fired",
        now,
        detail={"kind": edge.kind, "edge_seq": edge.edge_seq, "facts": stored_facts},
        **common,
    )
    decision = decide(rules, snapshot, edge.trigger_name, scope)
    properties.mark_event_decided(connection, event_id, now)
    trace = _trace(decision)
    if not decision.orders_something:
        summary.not_ordered += 1
        audit.record(
            connection,
            "no_rule_matched",
            now,
            detail={"reason": decision.reason, "trace": trace},
            **common,
        )
        return
    summary.ordered += 1
    assert decision.rule_id is not None
    audit.record(
        connection,
        "rule_matched",
        now,
        rule_id=decision.rule_id,
        detail={
            "reason": decision.reason,
            "services": [{"slug": s.slug, "quantity": s.quantity} for s in decision.services],
            "trace": trace,
        },
        **common,
    )
    settings = components.settings
    try:
        plan = plan_order(
            snapshot, edge, decision, components.catalog, settings.orders.duplicate_window_hours
        )
    except PlanProblem as exc:
        summary.invalid += 1
        audit.record(
            connection,
            "order_not_plannable",
            now,
            rule_id=decision.rule_id,
            detail={"problems": exc.problems},
            **common,
        )
        return
    blocker = outbox.blocking_order(connection, property_id, now)
    if blocker is not None:
        summary.blocked += 1
        audit.record(
            connection,
            "duplicate_blocked",
            now,
            rule_id=decision.rule_id,
            order_id=int(blocker["id"]),
            external_order_id=str(blocker["external_order_id"]),
            detail={
                "blocked_by": blocker["external_order_id"],
                "blocking_order_created_at": blocker["created_at"].isoformat(),
                "window_hours": plan.window_hours,
            },
            **common,
        )
        return
    if settings.orders.mode == "dry_run":
        audit.record(
            connection,
            "order_planned_dry_run",
            now,
            rule_id=decision.rule_id,
            external_order_id=plan.external_order_id,
            detail={"services": plan.payload["services"]},
            **common,
        )
        return
    state = (
        OrderState.AWAITING_APPROVAL
        if (settings.orders.mode == "approval" or plan.requires_approval)
        else OrderState.PLANNED
    )
    order_id = outbox.insert_order(
        connection,
        plan,
        event_id=event_id,
        rule_id=decision.rule_id,
        rules_version=rules.version,
        state=state,
        now=now,
    )
    summary.orders_created += 1
    audit.record(
        connection,
        "order_created",
        now,
        rule_id=decision.rule_id,
        order_id=order_id,
        external_order_id=plan.external_order_id,
        detail={
            "state": state.value,
            "billing_entity_slug": plan.billing_entity_slug,
            "services": plan.payload["services"],
            "window_hours": plan.window_hours,
        },
        **common,
    )


def _trace(decision: Decision) -> list[dict[str, Any]]:
    return [
        {
            "rule_id": t.rule_id,
            "condition": t.expression,
            "result": t.result,
            **({"error": t.error} if t.error else {}),
        }
        for t in decision.trace
    ]


# --- send ------------------------------------------------------------------------------------


def send_due(components: Components, now: Callable[[], datetime], summary: CycleSummary) -> None:
    """Send every planned order that is due, one at a time, paced under the rate limit."""
    if components.client is None or components.settings.orders.mode == "dry_run":
        return
    with components.state.begin() as connection:
        due = outbox.due_order_ids(connection, now(), limit=10_000)
    for order_id in due:
        _send_one(components, components.client, order_id, now, summary)


def _send_one(
    components: Components,
    client: PlanomaticClient,
    order_id: int,
    now: Callable[[], datetime],
    summary: CycleSummary,
) -> None:
    # Phase 2: lease the order and commit before anything leaves the process.
    with components.state.begin() as connection:
        order = outbox.lease_for_sending(
            connection, order_id, components.owner, now(), LEASE_SECONDS
        )
        if order is None:
            return
        audit.record(
            connection,
            "order_sending",
            now(),
            **_order_refs(order),
            detail={"attempt": order["attempts"]},
        )
    components.pacer.wait()
    summary.sent += 1
    # Phase 3: the one foreign call.
    try:
        placed = client.create_order(order["payload"])
    except VendorRejected as exc:
        summary.rejected += 1
        errors = [{"attr": e.attr, "message": e.message} for e in exc.field_errors]
        _finish(
            components,
            order,
            OrderState.REJECTED,
            now(),
            "order_rejected",
            {"status": exc.status, "errors": errors},
            last_error=str(exc),
        )
        return
    except VendorNotReached as exc:
        _retry_or_fail(components, order, exc, now(), summary)
        return
    except VendorAmbiguous as exc:
        summary.unknown += 1
        _finish(
            components,
            order,
            OrderState.UNKNOWN,
            now(),
            "order_outcome_unknown",
            {"reason": str(exc)},
            last_error=str(exc),
        )
        return
    # Phase 4: record the outcome with its audit row.
    summary.placed += 1
    _finish(
        components,
        order,
        OrderState.PLACED,
        now(),
        "order_placed",
        {"vendor_order_id": placed.order_id, "vendor_status": placed.order_status},
        vendor_order_id=placed.order_id,
        vendor_request_id=placed.request_id,
        vendor_status=placed.order_status,
    )


def _retry_or_fail(
    components: Components,
    order: dict[str, Any] | Any,
    exc: Exception,
    now: datetime,
    summary: CycleSummary,
) -> None:
    attempts = int(order["attempts"])
    if attempts >= components.settings.orders.max_attempts:
        summary.failed += 1
        _finish(
            components,
            order,
            OrderState.FAILED,
            now,
            "order_failed",
            {"reason": str(exc), "attempts": attempts},
            last_error=str(exc),
        )
        return
    summary.retried += 1
    # Full jitter over an exponential ceiling (capped at 30 minutes).
    delay = components.jitter.uniform(0, min(1800.0, 5.0 * 2**attempts))
    _finish(
        components,
        order,
        OrderState.PLANNED,
        now,
        "order_retry_scheduled",
        {"reason": str(exc), "attempts": attempts, "retry_in_seconds": round(delay, 1)},
        last_error=str(exc),
        next_attempt_at=now + timedelta(seconds=delay),
    )


def _finish(
    components: Components,
    order: Any,
    state: OrderState,
    now: datetime,
    kind: str,
    detail: dict[str, Any],
    **outcome: Any,
) -> None:
    with components.state.begin() as connection:
        outbox.set_outcome(connection, int(order["id"]), state, now, **outcome)
        audit.record(
            connection, kind, now, **_order_refs(order), detail={"state": state.value, **detail}
        )
    log.info(
        kind,
        external_order_id=order["external_order_id"],
        property=order["external_property_id"],
        state=state.value,
    )


def _order_refs(order: Any) -> dict[str, Any]:
    return {
        "external_property_id": order["external_property_id"],
        "rule_id": order["rule_id"],
        "rules_version": order["rules_version"],
        "event_id": order["event_id"],
        "order_id": int(order["id"]),
        "external_order_id": order["external_order_id"],
    }


# --- recovery --------------------------------------------------------------------------------


def recover(components: Components, now: datetime, summary: CycleSummary) -> None:
    """Orders a dead sender left in `sending`: the POST may have happened, so they become unknown.

    Never re-sent blindly (reliability.md): an operator or a later status check resolves them.
    """
    with components.state.begin() as connection:
        stale = outbox.expired_leases(connection, now)
    for order in stale:
        summary.recovered += 1
        summary.unknown += 1
        _finish(
            components,
            order,
            OrderState.UNKNOWN,
            now,
            "order_outcome_unknown",
            {"reason": f"sender {order['lease_owner']} stopped while sending; lease expired"},
        )
