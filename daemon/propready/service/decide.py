"""Decide: store a batch's readiness events with their decisions, and the orders they plan.

The decisions themselves were made by the pure core (core/batch_plan.py): here they are written,
inside the poll's batch transaction, so the events, the decisions, the orders and their audit
rows commit together. Events are inserted in one statement; an edge already stored by an earlier,
overlapping poll is skipped with everything that follows from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog

from propready.adapters.store import audit, outbox, properties
from propready.core.audit_kinds import AuditKind
from propready.core.batch_plan import EdgeDecision
from propready.core.model import Decision
from propready.core.orders import Order, OrderState
from propready.core.planning import OrderPlan
from propready.service.components import Components, CycleSummary

log = structlog.get_logger("propready.decide")


def record_decisions(
    components: Components,
    connection: sa.Connection,
    decisions: Sequence[EdgeDecision],
    now: datetime,
    summary: CycleSummary,
) -> None:
    """Store the events of a batch and act on each decision (audit, plan, order)."""
    event_ids = properties.insert_readiness_events(
        connection,
        [(d.snapshot.external_property_id, d.edge, d.event_facts) for d in decisions],
        now,
    )
    fresh = [(d, event_id) for d, event_id in zip(decisions, event_ids, strict=True) if event_id]
    dry_run = components.settings.orders.mode == "dry_run"
    blockers: Mapping[str, Order] = {}
    if dry_run:
        planned = [d.plan.external_property_id for d, _ in fresh if d.plan is not None]
        blockers = outbox.blocking_orders(connection, planned, now)
    for decision, event_id in fresh:
        summary.events += 1
        common = _common(decision, event_id)
        audit.record(
            connection,
            AuditKind.TRIGGER_FIRED,
            now,
            detail={
                "kind": decision.edge.kind,
                "edge_seq": decision.edge.edge_seq,
                "facts": dict(decision.event_facts),
            },
            **common,
        )
        plan = _audit_decision(connection, decision, now, summary, common)
        if plan is None:
            continue
        if dry_run:
            _record_dry_run(connection, plan, decision.decision, now, summary, common, blockers)
        else:
            _create_order(components, connection, plan, decision.decision, now, summary, common)


def _common(decision: EdgeDecision, event_id: int) -> dict[str, Any]:
    return {
        "external_property_id": decision.snapshot.external_property_id,
        "trigger_name": decision.edge.trigger_name,
        "rules_version": decision.decision.rules_version,
        "event_id": event_id,
    }


def _audit_decision(
    connection: sa.Connection,
    decided: EdgeDecision,
    now: datetime,
    summary: CycleSummary,
    common: dict[str, Any],
) -> OrderPlan | None:
    """Audit the rules' decision; the order request when there is one to act on."""
    decision = decided.decision
    trace = _trace(decision)
    if not decision.orders_something:
        summary.not_ordered += 1
        audit.record(
            connection,
            AuditKind.NO_RULE_MATCHED,
            now,
            detail={"reason": decision.reason, **_explanation(decision), "trace": trace},
            **common,
        )
        return None
    summary.ordered += 1
    assert decision.rule_id is not None
    audit.record(
        connection,
        AuditKind.RULE_MATCHED,
        now,
        rule_id=decision.rule_id,
        detail={
            "reason": decision.reason,
            **_explanation(decision),
            "services": [{"slug": s.slug, "quantity": s.quantity} for s in decision.services],
            "trace": trace,
        },
        **common,
    )
    if decided.plan is None:
        summary.invalid += 1
        log.warning(
            "order_not_plannable",
            property=decided.snapshot.external_property_id,
            problems=list(decided.problems),
        )
        audit.record(
            connection,
            AuditKind.ORDER_NOT_PLANNABLE,
            now,
            rule_id=decision.rule_id,
            detail={"problems": list(decided.problems)},
            **common,
        )
    return decided.plan


def _record_dry_run(
    connection: sa.Connection,
    plan: OrderPlan,
    decision: Decision,
    now: datetime,
    summary: CycleSummary,
    common: dict[str, Any],
    blockers: Mapping[str, Order],
) -> None:
    assert decision.rule_id is not None
    blocker = blockers.get(plan.external_property_id)
    if blocker is not None:
        summary.blocked += 1
        _audit_blocked(connection, now, decision.rule_id, blocker, plan.window_hours, common)
        return
    audit.record(
        connection,
        AuditKind.ORDER_PLANNED_DRY_RUN,
        now,
        rule_id=decision.rule_id,
        external_order_id=plan.external_order_id,
        detail={"services": plan.payload["services"]},
        **common,
    )


def _create_order(
    components: Components,
    connection: sa.Connection,
    plan: OrderPlan,
    decision: Decision,
    now: datetime,
    summary: CycleSummary,
    common: dict[str, Any],
) -> None:
    assert decision.rule_id is not None
    mode = components.settings.orders.mode
    state = (
        OrderState.AWAITING_APPROVAL
        if (mode == "approval" or plan.requires_approval)
        else OrderState.PLANNED
    )
    # The window check and the insert are one step the database enforces (exclusion constraint
    # on PostgreSQL, BEGIN IMMEDIATE plus a trigger on SQLite): racers get WindowTaken.
    outcome = outbox.insert_order_in_window(
        connection,
        plan,
        event_id=common["event_id"],
        rule_id=decision.rule_id,
        rules_version=common["rules_version"],
        state=state,
        now=now,
    )
    if isinstance(outcome, outbox.WindowTaken):
        summary.blocked += 1
        _audit_blocked(
            connection,
            now,
            decision.rule_id,
            outcome.blocker,
            plan.window_hours,
            common,
            by_constraint=outcome.by_constraint,
        )
        return
    summary.orders_created += 1
    audit.record(
        connection,
        AuditKind.ORDER_CREATED,
        now,
        rule_id=decision.rule_id,
        order_id=outcome.order_id,
        external_order_id=plan.external_order_id,
        detail={
            "state": state.value,
            "billing_entity_slug": plan.billing_entity_slug,
            "services": plan.payload["services"],
            "window_hours": plan.window_hours,
        },
        **common,
    )


def _audit_blocked(
    connection: sa.Connection,
    now: datetime,
    rule_id: str,
    blocker: Order,
    window_hours: float,
    common: dict[str, Any],
    *,
    by_constraint: bool = False,
) -> None:
    audit.record(
        connection,
        AuditKind.DUPLICATE_BLOCKED,
        now,
        rule_id=rule_id,
        order_id=blocker.id,
        external_order_id=blocker.external_order_id,
        detail={
            "blocked_by": blocker.external_order_id,
            "blocking_order_created_at": blocker.created_at.isoformat(),
            "window_hours": window_hours,
            **({"caught_by": "database_constraint"} if by_constraint else {}),
        },
        **common,
    )


def _explanation(decision: Decision) -> dict[str, Any]:
    """Which rules were considered and under which rule set: `propready explain` shows it."""
    return {
        "considered": list(decision.considered),
        "hit_policy": decision.hit_policy,
        "rules_version": decision.rules_version,
    }


def _trace(decision: Decision) -> list[dict[str, Any]]:
    return [
        {
            # kind: trigger (rule_id is then the trigger name), when, quantity, skipped, disabled
            "kind": t.kind,
            "rule_id": t.rule_id,
            "condition": t.expression,
            "result": t.result,
            **({"error": t.error} if t.error else {}),
            **({"facts": dict(t.facts)} if t.facts else {}),
        }
        for t in decision.trace
    ]
