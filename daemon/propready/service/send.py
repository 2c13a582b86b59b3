"""Send: each due order between two commits (lease, then outcome), paced under the rate limit.

Only what provably never reached PlanOmatic is retried; a 400 is final; an ambiguous outcome
becomes `unknown` and is never re-sent blindly (reliability.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from propready.adapters.planomatic import (
    PlanomaticClient,
    VendorAmbiguous,
    VendorNotReached,
    VendorRejected,
)
from propready.adapters.store import audit, outbox
from propready.core.orders import OrderState
from propready.service.components import LEASE_SECONDS, Components, CycleSummary

log = structlog.get_logger("propready.send")


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
        finish(
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
        finish(
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
    finish(
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
        finish(
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
    finish(
        components,
        order,
        OrderState.PLANNED,
        now,
        "order_retry_scheduled",
        {"reason": str(exc), "attempts": attempts, "retry_in_seconds": round(delay, 1)},
        last_error=str(exc),
        next_attempt_at=now + timedelta(seconds=delay),
    )


def finish(
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
