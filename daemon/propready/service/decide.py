"""Decide: a readiness event, the rules' decision, the duplicate window and the outbox row.

Runs inside the poll's batch transaction, so the event, the decision, the order and their audit
rows commit together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.store import audit, budgets, outbox, properties
from propready.core.audit_kinds import AuditKind
from propready.core.expressions import EvaluationScope
from propready.core.model import Decision, Edge, PropertySnapshot
from propready.core.orders import Order, OrderState
from propready.core.planning import OrderPlan, PlanProblem, plan_order
from propready.core.rules import decide
from propready.service.components import Components, CycleSummary


def handle_edge(
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
        AuditKind.TRIGGER_FIRED,
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
            AuditKind.NO_RULE_MATCHED,
            now,
            detail={"reason": decision.reason, **_explanation(decision), "trace": trace},
            **common,
        )
        return
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
    settings = components.settings
    try:
        plan = plan_order(
            snapshot, edge, decision, components.catalog, settings.orders.duplicate_window_hours
        )
    except PlanProblem as exc:
        summary.invalid += 1
        audit.record(
            connection,
            AuditKind.ORDER_NOT_PLANNABLE,
            now,
            rule_id=decision.rule_id,
            detail={"problems": exc.problems},
            **common,
        )
        return
    if settings.orders.mode == "dry_run":
        blocker = outbox.blocking_order(connection, property_id, now)
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
        return
    # Budgets: the rows are locked until this transaction commits (adapters/store/budgets.py).
    verdict = budgets.check_and_lock(connection, plan, rules.budgets, now, settings.source.zone)
    if verdict.outcome == "skip":
        summary.budget_skipped += 1
        audit.record(
            connection,
            AuditKind.BUDGET_EXCEEDED,
            now,
            rule_id=decision.rule_id,
            external_order_id=plan.external_order_id,
            detail={**verdict.detail(), **_price(plan)},
            **common,
        )
        return
    state = (
        OrderState.AWAITING_APPROVAL
        if (
            settings.orders.mode == "approval"
            or plan.requires_approval
            or verdict.outcome == "hold"
        )
        else OrderState.PLANNED
    )
    # The window check and the insert are one step the database enforces (exclusion constraint
    # on PostgreSQL, BEGIN IMMEDIATE plus a trigger on SQLite): racers get WindowTaken.
    outcome = outbox.insert_order_in_window(
        connection,
        plan,
        event_id=event_id,
        rule_id=decision.rule_id,
        rules_version=rules.version,
        state=state,
        now=now,
        budget_day=verdict.day,
        held_by_budget=verdict.held_by_budget,
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
    order_id = outcome.order_id
    summary.orders_created += 1
    summary.budget_held += verdict.outcome == "hold"
    audit.record(
        connection,
        AuditKind.ORDER_CREATED,
        now,
        rule_id=decision.rule_id,
        order_id=order_id,
        external_order_id=plan.external_order_id,
        detail={
            "state": state.value,
            "billing_entity_slug": plan.billing_entity_slug,
            "services": plan.payload["services"],
            "window_hours": plan.window_hours,
            **_price(plan),
            **verdict.detail(),
        },
        **common,
    )


def _price(plan: OrderPlan) -> dict[str, Any]:
    """The order's estimated price for the audit log (and the services without one)."""
    price: dict[str, Any] = {
        "estimated_price_cents": plan.estimated_price_cents,
        "price_estimated": plan.price_estimated,
    }
    if plan.unpriced_services:
        price["unpriced_services"] = list(plan.unpriced_services)
    return price


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
        external_order_id=str(blocker.external_order_id),
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
