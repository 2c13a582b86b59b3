"""`propready reorder`: order a home now, on purpose, through the live rules (design.md 8.1).

For a home whose order was rejected, canceled or never placed, or that an operator wants
photographed again: its current row is read from the source, the live rules decide for the named
trigger (or the first trigger that holds now, or the trigger of its latest readiness), and the
order goes through the outbox like any other, linked to the home's latest readiness event of that
trigger (a new `reorder` event when it never had one). The request is audited with the reason
and the operator. It refuses, in one line, what it cannot do: an unknown home, a row that cannot
be read, no rule that orders it, an order that cannot be planned, an open duplicate window
(unless `--ignore-window`, an audited override: the new order holds no window of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.source import homes_query, stream_batches
from propready.adapters.store import audit, outbox, properties
from propready.core.audit_kinds import AuditKind
from propready.core.batch_plan import (
    EdgeDecision,
    PollScope,
    decide_edge,
    fingerprint,
)
from propready.core.expressions import EvaluationScope
from propready.core.facts import RowProblem, RowTyper, facts_for_storage
from propready.core.model import Edge, OpenEvent, PropertySnapshot
from propready.service.components import Components, CycleSummary
from propready.service.decide import record_decisions


class ReorderRefused(Exception):
    """The home cannot be ordered now; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Reordered:
    external_property_id: str
    trigger_name: str
    external_order_id: str
    state: str  # planned, or awaiting_approval
    window_ignored: bool


def reorder(
    components: Components,
    property_id: str,
    *,
    reason: str,
    by: str,
    now: datetime,
    trigger: str | None = None,
    ignore_window: bool = False,
    vendor_canceled_order: str | None = None,
) -> Reordered:
    """Order the home now; ReorderRefused (audited as a refused request) when it cannot be.

    `vendor_canceled_order`: the order PlanOmatic canceled that this re-order answers (the
    rules' on_vendor_cancel: reorder), kept in the audit row.
    """
    if not reason.strip():
        raise ReorderRefused("a --reason is required (it is kept in the audit log)")
    if components.settings.orders.mode == "dry_run":
        raise ReorderRefused(
            "orders.mode is dry_run: nothing is ordered (switch to live or approval first)"
        )
    request: dict[str, Any] = {"reason": reason, "by": by, "ignore_window": ignore_window}
    if vendor_canceled_order is not None:
        request["vendor_canceled_order"] = vendor_canceled_order
    try:
        snapshot, row_hash, typer = _read_home(components, property_id)
        return _order(components, snapshot, row_hash, typer, trigger, request, now)
    except ReorderRefused as exc:
        _audit_refusal(components, property_id, trigger, request, str(exc), now)
        raise


def _read_home(components: Components, property_id: str) -> tuple[PropertySnapshot, str, RowTyper]:
    source = components.settings.source
    query, names = homes_query(source.query, 1)
    rows: list[Any] = []
    typer: RowTyper | None = None
    fingerprints: list[str] = []
    for batch in stream_batches(
        components.source, query, source.batch_size, {names[0]: property_id}
    ):
        typer = typer or RowTyper(
            batch.columns, source.zone, source.types, secret_columns=source.secret_columns
        )
        rows.extend(batch.rows)
        fingerprints.extend(batch.fingerprints or [])
    if typer is None or not rows:
        raise ReorderRefused(f"no home {property_id!r} in the source query")
    if len(rows) > 1:
        raise ReorderRefused(
            f"the source query returns {len(rows)} rows for {property_id!r}: which one is meant "
            "is ambiguous (fix the PM data or the query)"
        )
    snapshot = typer.type_row(rows[0])
    if isinstance(snapshot, RowProblem):
        raise ReorderRefused(
            f"{property_id}'s row cannot be read: {snapshot.column}: {snapshot.reason}"
        )
    return snapshot, fingerprints[0] if fingerprints else fingerprint(rows[0]), typer


def _order(
    components: Components,
    snapshot: PropertySnapshot,
    row_hash: str,
    typer: RowTyper,
    trigger: str | None,
    request: dict[str, Any],
    now: datetime,
) -> Reordered:
    rules = components.rules
    settings = components.settings
    zone = settings.source.zone
    evaluation = EvaluationScope(
        snapshot.facts, now, zone, previous=snapshot.facts, secrets=snapshot.secrets
    )
    property_id = snapshot.external_property_id
    summary = CycleSummary()
    with components.state.begin() as connection, audit.buffered(connection):
        name = _trigger_for(connection, components, evaluation, property_id, trigger)
        event = _event_for(connection, property_id, name, now)
        scope = PollScope(
            rules=rules,
            typer=typer,
            catalog=components.catalog,
            zone=zone,
            first_sight=settings.orders.first_sight,
            default_window_hours=settings.orders.duplicate_window_hours,
            full_pass=True,
            config_fingerprint=components.plan_fingerprint(),
        )
        facts = facts_for_storage(snapshot.public_facts())
        decided = decide_edge(
            scope, snapshot, event.edge, evaluation, facts, attempt=event.plan_attempts
        )
        decided = _checked(connection, decided, request, now)
        audit.record(
            connection,
            AuditKind.REORDER_REQUESTED,
            now,
            external_property_id=property_id,
            trigger_name=name,
            event_id=event.id,
            rule_id=decided.decision.rule_id,
            detail={**request, "outcome": "ordered"},
        )
        because = f"reorder by {request['by']}: {request['reason']}"
        decided = replace(decided, event=event, replanned_because=because)
        decided = replace(decided, basis=scope.basis(row_hash))
        record_decisions(components, connection, [decided], now, summary)
        if not summary.orders_created:  # a budget skipped it, or a racer took the window
            raise ReorderRefused(
                f"{property_id} was not ordered: {_why_not(summary)} (see `propready explain`)"
            )
        assert decided.plan is not None
        order = outbox.find_by_external_order_id(connection, decided.plan.external_order_id)
        assert order is not None
    return Reordered(
        property_id,
        name,
        order.external_order_id,
        order.state.value,
        bool(request["ignore_window"]),
    )


def _trigger_for(
    connection: sa.Connection,
    components: Components,
    evaluation: EvaluationScope,
    property_id: str,
    trigger: str | None,
) -> str:
    triggers = components.rules.triggers
    if trigger is not None:
        if trigger not in triggers:
            known = ", ".join(sorted(triggers))
            raise ReorderRefused(f"unknown trigger {trigger!r} (known: {known})")
        return trigger
    for name, expression in triggers.items():
        if evaluation.is_true(expression)[0]:
            return name
    latest = properties.latest_event(connection, property_id)
    if latest is not None and latest.edge.trigger_name in triggers:
        return latest.edge.trigger_name
    raise ReorderRefused(
        f"no trigger holds now for {property_id} and it has no readiness yet: name one with "
        "--trigger"
    )


def _event_for(
    connection: sa.Connection, property_id: str, trigger: str, now: datetime
) -> OpenEvent:
    """The home's latest readiness of this trigger, or a new `reorder` event (edge 0, which no
    rising edge ever uses)."""
    event = properties.latest_event(connection, property_id, trigger)
    if event is not None:
        return event
    properties.insert_readiness_events(
        connection, [(property_id, Edge(trigger, 0, "reorder"), {})], now
    )
    event = properties.latest_event(connection, property_id, trigger)
    assert event is not None
    return event


def _checked(
    connection: sa.Connection, decided: EdgeDecision, request: dict[str, Any], now: datetime
) -> EdgeDecision:
    """The decision, if it can become an order now; ReorderRefused naming why not."""
    property_id = decided.snapshot.external_property_id
    if not decided.decision.orders_something:
        raise ReorderRefused(
            f"no rule orders {property_id} for trigger {decided.edge.trigger_name}: "
            f"{decided.decision.reason}"
        )
    if decided.plan is None:
        raise ReorderRefused(
            f"the order for {property_id} cannot be planned: {'; '.join(decided.problems)}"
        )
    blocker = outbox.blocking_order(connection, property_id, now)
    if blocker is None:
        return decided
    if not request["ignore_window"]:
        raise ReorderRefused(
            f"{property_id} has order {blocker.external_order_id} ({blocker.state.value}) whose "
            f"duplicate window runs until {blocker.window_end:%Y-%m-%d %H:%M} UTC; add "
            "--ignore-window to order anyway"
        )
    request["overrode_window_of"] = blocker.external_order_id
    plan = replace(decided.plan, window_hours=0)
    return replace(decided, plan=plan, window_override=True)


def _why_not(summary: CycleSummary) -> str:
    if summary.budget_skipped:
        return "a budget skipped it"
    if summary.blocked:
        return "another order took its duplicate window meanwhile"
    return "no order was created"


def _audit_refusal(
    components: Components,
    property_id: str,
    trigger: str | None,
    request: dict[str, Any],
    why: str,
    now: datetime,
) -> None:
    with components.state.begin() as connection:
        audit.record(
            connection,
            AuditKind.REORDER_REQUESTED,
            now,
            external_property_id=property_id[:255],
            trigger_name=trigger,
            detail={**request, "outcome": "refused", "why": why},
        )
