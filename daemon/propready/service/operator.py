"""What an operator does to single orders: approve, hold, cancel, resolve an unknown outcome.

Each action checks the order's state and changes it in one transaction with its audit row; a
cancel at the vendor sits between the check and the record, like a send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, tzinfo
from typing import Any

import sqlalchemy as sa

from propready.adapters.planomatic import PlanomaticClient, VendorRejected
from propready.adapters.store import audit, outbox
from propready.adapters.store import budgets as budget_store
from propready.core.audit_kinds import AuditKind
from propready.core.budgets import Budget
from propready.core.orders import (
    CANCELABLE_VENDOR_STATUSES,
    CancelRefused,
    Order,
    OrderState,
    cancel_route,
    check_cancel_request,
)
from propready.service.send import order_refs, reopen_readiness


class OrderActionError(Exception):
    """The action cannot be done on this order; the message says why."""


def approve(
    state: sa.Engine,
    external_order_id: str,
    now: datetime,
    by: str,
    *,
    budgets: Callable[[], Sequence[Budget]] = tuple,
    zone: tzinfo = UTC,
    over_budget_reason: str | None = None,
) -> Order:
    """awaiting_approval -> planned: the next send picks it up.

    An order a budget held is checked against the budgets again (`budgets()`, the live rule
    files' budgets), under the same locks as a new order, and counts in today's period (source
    time zone) once approved. If it would still overrun a budget, it is approved only with
    `over_budget_reason` (`--over-budget --reason TEXT`), which the audit row records.
    """
    with state.begin() as connection:
        order = _find(connection, external_order_id)
        if order.state is not OrderState.AWAITING_APPROVAL:
            raise OrderActionError(f"{external_order_id} is {order.state}, not awaiting_approval")
        detail: dict[str, Any] = {"state": OrderState.PLANNED.value, "approved_by": by}
        if order.held_by_budget is None:
            approved = outbox.approve(connection, order.id, now)
        else:
            verdict = budget_store.recheck_for_approval(connection, order, budgets(), now, zone)
            detail.update(held_by_budget=order.held_by_budget, budget_day=verdict.day.isoformat())
            if verdict.outcome != "ok":
                if not over_budget_reason:
                    raise OrderActionError(
                        f"{external_order_id} was held by budget {order.held_by_budget!r} and "
                        f"still exceeds {verdict.reason}; to exceed it, approve with "
                        "--over-budget --reason TEXT"
                    )
                detail.update(
                    over_budget=True,
                    over_budget_reason=over_budget_reason,
                    **{k: v for k, v in verdict.detail().items() if k != "held_by_budget"},
                )
            approved = budget_store.approve_held(connection, order.id, verdict.day, now)
        if not approved:
            raise OrderActionError(f"{external_order_id} changed state meanwhile; look again")
        audit.record(connection, AuditKind.ORDER_APPROVED, now, **order_refs(order), detail=detail)
        return replace(order, state=OrderState.PLANNED, held_by_budget=None)


MAX_HOLD_REASON = 500


def hold(state: sa.Engine, external_order_id: str, reason: str, now: datetime, by: str) -> Order:
    """planned -> awaiting_approval with the reason: the send skips it until `approve`.

    A hold is the same waiting state as approval mode and a budget's hold, so one `approve`
    (CLI or console) releases any of them. Only a planned order can be held: once a sender has
    leased it the POST may be in flight, and a placed order is canceled, not held.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise OrderActionError("a reason is required to hold an order (--reason TEXT)")
    if len(reason) > MAX_HOLD_REASON:
        raise OrderActionError(f"the reason is longer than {MAX_HOLD_REASON} characters")
    with state.begin() as connection:
        order = _find(connection, external_order_id)
        if order.state is not OrderState.PLANNED:
            after = (
                "; it may be at PlanOmatic already: cancel it once placed"
                if order.state is OrderState.SENDING
                else ""
            )
            raise OrderActionError(
                f"{external_order_id} is {order.state}; only a planned order can be held{after}"
            )
        if not outbox.hold(connection, order.id, now):
            raise OrderActionError(f"{external_order_id} changed state meanwhile; look again")
        audit.record(
            connection,
            AuditKind.ORDER_HELD,
            now,
            **order_refs(order),
            detail={
                "state": OrderState.AWAITING_APPROVAL.value,
                "held_by": by,
                "hold_reason": reason,
            },
        )
        return replace(order, state=OrderState.AWAITING_APPROVAL)


def cancel(
    state: sa.Engine,
    client: PlanomaticClient | None,
    external_order_id: str,
    reason: str,
    notes: str,
    now: datetime,
    by: str,
) -> Order:
    """Cancel locally (never sent) or at PlanOmatic (placed, still in a cancelable status)."""
    try:
        check_cancel_request(reason, notes)
    except CancelRefused as exc:
        raise OrderActionError(str(exc)) from None
    with state.begin() as connection:
        order = _find(connection, external_order_id)
    try:
        route = cancel_route(order)
    except CancelRefused as exc:
        raise OrderActionError(f"cannot cancel {external_order_id}: {exc}") from None
    detail: dict[str, Any] = {"reason": reason, "notes": notes, "canceled_by": by}
    vendor_status = None
    if route == "vendor":
        if client is None:
            raise OrderActionError("dry_run mode has no PlanOmatic client; cannot cancel there")
        try:
            answer = client.cancel_order(str(order.vendor_order_id), reason, notes)
        except VendorRejected as exc:
            messages = {e.message for e in exc.field_errors if e.attr == "order_id"}
            if "not_cancelable" in messages:
                raise OrderActionError(
                    f"PlanOmatic refuses: the order is past "
                    f"{', '.join(sorted(CANCELABLE_VENDOR_STATUSES))}; email PlanOmatic support "
                    "(run `propready orders sync` to see its status)"
                ) from None
            raise OrderActionError(f"PlanOmatic refused the cancel: {exc}") from None
        vendor_status = answer.order_status or "canceled"
        detail["vendor_status"] = vendor_status
    expected = OrderState(order.state)
    with state.begin() as connection:
        if not outbox.set_outcome(
            connection,
            order.id,
            OrderState.CANCELED,
            now,
            expected_state=expected,
            vendor_status=vendor_status,
        ):
            raise OrderActionError(f"{external_order_id} changed state meanwhile; look again")
        audit.record(
            connection,
            AuditKind.ORDER_CANCELED,
            now,
            **order_refs(order),
            detail={"state": OrderState.CANCELED.value, "where": route, **detail},
        )
        if route == "local":  # canceled before it was sent: the readiness is not used up
            reopen_readiness(connection, order, now, f"canceled before sending by {by}")
    return replace(order, state=OrderState.CANCELED, vendor_status=vendor_status)


def resolve(
    state: sa.Engine,
    client: PlanomaticClient | None,
    external_order_id: str,
    now: datetime,
    by: str,
    *,
    vendor_order_id: str | None = None,
    not_placed: bool = False,
) -> Order:
    """Settle an `unknown` order from what the operator found in PlanOmatic's portal.

    With the vendor's order id the order is retrieved to confirm it is ours, then `placed`.
    With `not_placed` it becomes `failed`, which frees the window for the next readiness.
    """
    if (vendor_order_id is None) == (not not_placed):
        raise OrderActionError("give either --vendor-order-id or --not-placed")
    with state.begin() as connection:
        order = _find(connection, external_order_id)
    if order.state not in (OrderState.UNKNOWN.value, OrderState.PLACED.value):
        raise OrderActionError(f"{external_order_id} is {order.state}; nothing to resolve")
    values: dict[str, Any] = {}
    if vendor_order_id is not None:
        if client is None:
            raise OrderActionError("dry_run mode has no PlanOmatic client to confirm the order")
        found = client.retrieve_order(vendor_order_id)
        if found.raw.get("external_order_id") not in (None, external_order_id):
            raise OrderActionError(
                f"PlanOmatic order {vendor_order_id} belongs to "
                f"{found.raw.get('external_order_id')}, not {external_order_id}"
            )
        target = OrderState.PLACED
        values = {
            "vendor_order_id": found.order_id,
            "vendor_request_id": found.request_id,
            "vendor_status": found.order_status,
        }
    else:
        target = OrderState.FAILED
    with state.begin() as connection:
        if not outbox.set_outcome(
            connection,
            order.id,
            target,
            now,
            expected_state=OrderState(order.state),
            **values,
        ):
            raise OrderActionError(f"{external_order_id} changed state meanwhile; look again")
        audit.record(
            connection,
            AuditKind.ORDER_RESOLVED,
            now,
            **order_refs(order),
            detail={"state": target.value, "resolved_by": by, **values},
        )
        if target is OrderState.FAILED:  # never placed: the readiness is not used up
            reopen_readiness(connection, order, now, f"resolved as never placed by {by}")
    return replace(order, state=target, **values)


def _find(connection: sa.Connection, external_order_id: str) -> Order:
    order = outbox.find_by_external_order_id(connection, external_order_id)
    if order is None:
        raise OrderActionError(f"no order {external_order_id!r}")
    return order
