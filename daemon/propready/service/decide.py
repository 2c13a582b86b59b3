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

from propready.adapters.store import audit, budgets, outbox, properties
from propready.adapters.store.properties import EventUpdate
from propready.core.audit_kinds import AuditKind
from propready.core.batch_plan import EdgeDecision, EventClosing
from propready.core.model import Decision, EventState
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
    closings: Sequence[EventClosing] = (),
) -> None:
    """Store the events of a batch and act on each decision (audit, plan, order); re-planned
    readiness events keep their stored event, and each event's state follows its outcome."""
    new = [d for d in decisions if d.event is None]
    event_ids = properties.insert_readiness_events(
        connection, [(d.snapshot.external_property_id, d.edge, d.event_facts) for d in new], now
    )
    fresh = [(d, event_id) for d, event_id in zip(new, event_ids, strict=True) if event_id]
    fresh += [(d, d.event.id) for d in decisions if d.event is not None]
    recorder = _Recorder(components, connection, now, summary)
    if recorder.dry_run:
        planned = [d.plan.external_property_id for d, _ in fresh if d.plan is not None]
        recorder.blockers = outbox.blocking_orders(connection, planned, now)
    updates = [recorder.record(decision, event_id) for decision, event_id in fresh]
    for closing in closings:
        updates.append(recorder.close(closing))
    properties.update_events(connection, updates)


class _Recorder:
    """Writes one batch's decisions: the audit rows, and the orders (or dry-run plans)."""

    def __init__(
        self,
        components: Components,
        connection: sa.Connection,
        now: datetime,
        summary: CycleSummary,
    ) -> None:
        self.components = components
        self.connection = connection
        self.now = now
        self.summary = summary
        self.dry_run = components.settings.orders.mode == "dry_run"
        # Dry run inserts no orders: the windows are looked up once for the whole batch.
        self.blockers: Mapping[str, Order] = {}

    def record(self, decided: EdgeDecision, event_id: int) -> EventUpdate:
        """Audit and act on one decision; where its readiness event stands afterwards."""
        common = {
            "external_property_id": decided.snapshot.external_property_id,
            "trigger_name": decided.edge.trigger_name,
            "rules_version": decided.decision.rules_version,
            "event_id": event_id,
        }
        attempts = decided.event.plan_attempts if decided.event is not None else 0
        if decided.event is None:
            self.summary.events += 1
            self._audit(
                AuditKind.TRIGGER_FIRED,
                common,
                {
                    "kind": decided.edge.kind,
                    "edge_seq": decided.edge.edge_seq,
                    "facts": dict(decided.event_facts),
                },
            )
        else:
            self.summary.replanned += 1
            self._audit(
                AuditKind.READINESS_REPLANNED,
                common,
                {
                    "because": decided.replanned_because,
                    "attempt": attempts,
                    "facts": dict(decided.event_facts),
                },
            )
        plan = self._audit_decision(decided, common)
        if plan is None:
            if decided.decision.orders_something:  # not plannable: a person can fix the row
                reason = "; ".join(decided.problems)
                return EventUpdate(event_id, EventState.OPEN, decided.basis, attempts, reason)
            return EventUpdate(event_id, EventState.CLOSED, decided.basis, attempts)
        if self.dry_run:
            state = self._record_dry_run(plan, common)
        else:
            state = self._create_order(plan, decided, common)
        ordered = state is EventState.ORDERED
        return EventUpdate(event_id, state, decided.basis, attempts + int(ordered))

    def close(self, closing: EventClosing) -> EventUpdate:
        """An open readiness that will not be planned again (its trigger no longer holds...)."""
        event = closing.event
        self._audit(
            AuditKind.READINESS_CLOSED,
            {
                "external_property_id": event.external_property_id,
                "trigger_name": event.edge.trigger_name,
                "event_id": event.id,
            },
            {"reason": closing.reason},
        )
        return EventUpdate(
            event.id, EventState.CLOSED, event.plan_basis, event.plan_attempts, closing.reason
        )

    def _audit(self, kind: AuditKind, common: Mapping[str, Any], detail: Any, **refs: Any) -> None:
        audit.record(self.connection, kind, self.now, detail=detail, **common, **refs)

    def _audit_decision(self, decided: EdgeDecision, common: dict[str, Any]) -> OrderPlan | None:
        """Audit the rules' decision; the order request when there is one to act on."""
        decision = decided.decision
        explained = {"reason": decision.reason, **_explanation(decision)}
        if not decision.orders_something:
            self.summary.not_ordered += 1
            self._audit(AuditKind.NO_RULE_MATCHED, common, {**explained, "trace": _trace(decision)})
            return None
        self.summary.ordered += 1
        common["rule_id"] = decision.rule_id
        services = [{"slug": s.slug, "quantity": s.quantity} for s in decision.services]
        self._audit(
            AuditKind.RULE_MATCHED,
            common,
            {**explained, "services": services, "trace": _trace(decision)},
        )
        if decided.plan is None:
            self.summary.invalid += 1
            log.warning(
                "order_not_plannable",
                property=decided.snapshot.external_property_id,
                problems=list(decided.problems),
            )
            self._audit(AuditKind.ORDER_NOT_PLANNABLE, common, {"problems": list(decided.problems)})
        return decided.plan

    def _record_dry_run(self, plan: OrderPlan, common: dict[str, Any]) -> EventState:
        blocker = self.blockers.get(plan.external_property_id)
        if blocker is not None:
            self.summary.blocked += 1
            self._audit_blocked(blocker, plan.window_hours, common, by_constraint=False)
            return EventState.CLOSED
        self._audit(
            AuditKind.ORDER_PLANNED_DRY_RUN,
            common,
            {"services": plan.payload["services"]},
            external_order_id=plan.external_order_id,
        )
        # Dry run consumes nothing: `backfill` offers this readiness once the mode is live.
        return EventState.DRY_RUN

    def _create_order(
        self, plan: OrderPlan, decided: EdgeDecision, common: dict[str, Any]
    ) -> EventState:
        decision = decided.decision
        assert decision.rule_id is not None
        settings = self.components.settings
        # Budgets: the period rows are locked until this transaction commits, before the window
        # insert (adapters/store/budgets.py), never inside a savepoint.
        verdict = budgets.check_and_lock(
            self.connection, plan, self.components.rules.budgets, self.now, settings.source.zone
        )
        if verdict.outcome == "skip":
            self.summary.budget_skipped += 1
            self._audit(
                AuditKind.BUDGET_EXCEEDED,
                common,
                {**verdict.detail(), **_price(plan)},
                external_order_id=plan.external_order_id,
            )
            return EventState.CLOSED  # a skip is final for this readiness, unless reordered
        held = settings.orders.mode == "approval" or plan.requires_approval
        state = (
            OrderState.AWAITING_APPROVAL
            if held or verdict.outcome == "hold"
            else OrderState.PLANNED
        )
        # The window check and the insert are one step the database enforces (exclusion
        # constraint on PostgreSQL, BEGIN IMMEDIATE plus a trigger on SQLite): racers get
        # WindowTaken.
        outcome = outbox.insert_order_in_window(
            self.connection,
            plan,
            event_id=common["event_id"],
            rule_id=decision.rule_id,
            rules_version=common["rules_version"],
            state=state,
            now=self.now,
            budget_day=verdict.day,
            held_by_budget=verdict.held_by_budget,
            window_override=decided.window_override,
        )
        if isinstance(outcome, outbox.WindowTaken):
            self.summary.blocked += 1
            self._audit_blocked(
                outcome.blocker, plan.window_hours, common, by_constraint=outcome.by_constraint
            )
            return EventState.CLOSED
        self.summary.orders_created += 1
        self.summary.budget_held += verdict.outcome == "hold"
        self._audit(
            AuditKind.ORDER_CREATED,
            common,
            {
                "state": state.value,
                "billing_entity_slug": plan.billing_entity_slug,
                "services": plan.payload["services"],
                "window_hours": plan.window_hours,
                **_price(plan),
                **verdict.detail(),
            },
            order_id=outcome.order_id,
            external_order_id=plan.external_order_id,
        )
        return EventState.ORDERED

    def _audit_blocked(
        self, blocker: Order, window_hours: float, common: dict[str, Any], *, by_constraint: bool
    ) -> None:
        self._audit(
            AuditKind.DUPLICATE_BLOCKED,
            common,
            {
                "blocked_by": blocker.external_order_id,
                "blocking_order_created_at": blocker.created_at.isoformat(),
                "window_hours": window_hours,
                **({"caught_by": "database_constraint"} if by_constraint else {}),
            },
            order_id=blocker.id,
            external_order_id=blocker.external_order_id,
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


def _price(plan: OrderPlan) -> dict[str, Any]:
    """The order's estimated price for the audit log (and the services without one)."""
    price: dict[str, Any] = {
        "estimated_price_cents": plan.estimated_price_cents,
        "price_estimated": plan.price_estimated,
    }
    if plan.unpriced_services:
        price["unpriced_services"] = list(plan.unpriced_services)
    return price
