"""Send: each due order between two commits (lease, then outcome), paced under the rate limit.

Only what provably never reached PlanOmatic (429, refused connection) is retried, with bounded,
jittered backoff; a 400 is final; an ambiguous outcome (5xx, timeout, dropped connection, a
crash mid-send) is re-sent only while the vendor's own duplicate protection covers the order
(`planomatic.vendor_duplicate_protection_hours`), where a `duplicate` answer then means "already
placed"; otherwise the order becomes `unknown` for an operator (reliability.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from propready.adapters.planomatic import (
    PlanomaticClient,
    VendorAmbiguous,
    VendorKeyRefused,
    VendorNotReached,
    VendorRateLimited,
    VendorRejected,
)
from propready.adapters.store import audit, outbox, properties, sending
from propready.adapters.store.sending import key_fingerprint
from propready.core.audit_kinds import AuditKind
from propready.core.orders import Order, OrderState, resend_is_covered
from propready.service.components import Components, CycleSummary, crash_point

log = structlog.get_logger("propready.send")

# The vendor's clock and ours may disagree: a re-send must land this far inside its threshold.
COVERAGE_MARGIN = timedelta(minutes=10)
RETRY_BASE_SECONDS = 5.0
RETRY_CAP_SECONDS = 1800.0
MAX_DUE_PER_CYCLE = 10_000


def send_due(
    components: Components,
    now: Callable[[], datetime],
    summary: CycleSummary,
    *,
    should_stop: Callable[[], bool] | None = None,
    limit: int = MAX_DUE_PER_CYCLE,
) -> bool:
    """Send due orders one at a time, paced under the rate limit, until none is due.

    Each order is claimed with `FOR UPDATE SKIP LOCKED` on PostgreSQL (BEGIN IMMEDIATE on
    SQLite), so senders on several hosts share the queue without waiting on each other. Stops
    claiming when the daemon is stopping or `should_stop()` says so (a job's time budget); return
    True when it stopped early and orders may still be due.
    """
    if components.client is None or components.settings.orders.mode == "dry_run":
        return False
    crash_point("after_plan")
    fingerprint = key_fingerprint(components.settings.planomatic.api_key.get_secret_value())
    for _ in range(limit):
        if components.stop_requested.is_set() or (should_stop is not None and should_stop()):
            return True
        with components.state.begin() as connection:
            paused = sending.current_pause(connection)
            if paused is not None and paused.holds_for(fingerprint):
                summary.sending_paused = paused.reason
                return False
            order = outbox.claim_due(connection, components.owner, now(), _lease(components))
            if order is None:
                return False
            if not _start_sending(components, connection, order, now(), summary):
                continue
        # Under a pause for another key, this order tells whether the new key works.
        trial = paused is not None
        if not _send_leased(components, components.client, order, now, summary, trial=trial):
            return False
    return True


def _lease(components: Components) -> float:
    return components.settings.daemon.lease_seconds


def _start_sending(
    components: Components,
    connection: sa.Connection,
    order: Order,
    now: datetime,
    summary: CycleSummary,
) -> bool:
    """Phase 2, in the claim's transaction: audit the attempt, or settle an uncovered re-send."""
    if order.ambiguous_at is not None and not _covered(components, order, now):
        # Re-sending was safe when it was scheduled; the daemon was down too long since.
        outbox.set_outcome(connection, order.id, OrderState.UNKNOWN, now)
        summary.unknown += 1
        audit.record(
            connection,
            AuditKind.ORDER_OUTCOME_UNKNOWN,
            now,
            **order_refs(order),
            detail={
                "state": OrderState.UNKNOWN.value,
                "reason": "an earlier attempt may have been saved and the vendor's duplicate "
                "protection no longer covers a re-send",
            },
        )
        return False
    audit.record(
        connection,
        AuditKind.ORDER_SENDING,
        now,
        **order_refs(order),
        detail={"attempt": order.attempts, "resend": order.ambiguous_at is not None},
    )
    return True


def _send_leased(
    components: Components,
    client: PlanomaticClient,
    order: Order,
    now: Callable[[], datetime],
    summary: CycleSummary,
    *,
    trial: bool = False,
) -> bool:
    """Wait for a rate-limit slot, then POST and record: phases 3 and 4 for a leased order.

    False when sending must stop: the vendor refused the API key.
    """
    crash_point("after_lease")
    summary.rate_limit_wait_seconds += components.pacer.wait(components.state)
    if not _still_ours(components, order, now(), summary):
        return True
    summary.sent += 1
    # Phase 3: the one foreign call.
    try:
        placed = client.create_order(order.payload)
    except VendorKeyRefused as exc:
        _pause_for_refused_key(components, order, exc, now(), summary)
        return False
    except VendorRejected as exc:
        crash_point("after_post")
        if exc.is_duplicate and order.ambiguous_at is not None:
            # Our earlier, ambiguous attempt was saved: the vendor refuses its twin.
            summary.placed += 1
            finish(
                components,
                order,
                OrderState.PLACED,
                now(),
                AuditKind.ORDER_PLACED,
                {
                    "confirmed_by": "vendor_duplicate_protection",
                    "vendor_order_id": None,
                    "note": "an earlier ambiguous attempt was saved; the vendor's order id is "
                    "not known (the API has no lookup by external_order_id)",
                },
            )
        else:
            summary.rejected += 1
            errors = [{"attr": e.attr, "message": e.message} for e in exc.field_errors]
            finish(
                components,
                order,
                OrderState.REJECTED,
                now(),
                AuditKind.ORDER_REJECTED,
                {"status": exc.status, "errors": errors},
                last_error=str(exc),
            )
    except VendorNotReached as exc:
        if isinstance(exc, VendorRateLimited):
            summary.rate_limited += 1
            components.pacer.back_off(components.state, components.pacer.rate_limited_pause)
        retry_or_fail(components, order, exc, now(), summary)
    except VendorAmbiguous as exc:
        crash_point("after_post")
        handle_ambiguous(components, order, str(exc), now(), summary)
    else:
        crash_point("after_post")
        # Phase 4: record the outcome with its audit row.
        summary.placed += 1
        finish(
            components,
            order,
            OrderState.PLACED,
            now(),
            AuditKind.ORDER_PLACED,
            {
                "vendor_order_id": placed.order_id,
                "vendor_status": placed.order_status,
                # Parts of the answer that could not be stored (an over-long status, ...).
                **({"anomalies": list(placed.anomalies)} if placed.anomalies else {}),
            },
            vendor_order_id=placed.order_id,
            vendor_request_id=placed.request_id,
            vendor_status=placed.order_status,
        )
    crash_point("after_outcome")
    if trial:
        _lift_pause(components, now())
    return True


def _pause_for_refused_key(
    components: Components,
    order: Order,
    exc: VendorKeyRefused,
    now: datetime,
    summary: CycleSummary,
) -> None:
    """The key is wrong: a configuration failure, not this order's outcome. The order goes back
    to `planned` (its attempt not counted) and every host stops sending with this key."""
    key = components.settings.planomatic.api_key.get_secret_value()
    summary.sending_paused = exc.vendor_words
    with components.state.begin() as connection:
        outbox.park(connection, order.id, components.owner, now)
        sending.pause(
            connection,
            reason=f"api_key_refused: {exc.vendor_words}",
            key_fingerprint=key_fingerprint(key),
            by=components.owner,
            now=now,
        )
        audit.record(
            connection,
            AuditKind.SENDING_PAUSED,
            now,
            **order_refs(order),
            detail={
                "reason": "api_key_refused",
                "vendor_said": exc.vendor_words,
                "state": OrderState.PLANNED.value,
                "what_to_do": "fix [planomatic] api_key, then reload (SIGHUP) or restart; "
                "orders wait in planned and are sent once a key is accepted",
            },
        )
    log.error("sending_paused", reason="api_key_refused", vendor_said=exc.vendor_words)


def _lift_pause(components: Components, now: datetime) -> None:
    """Another key got a definite answer from the vendor: the pause for the refused key ends."""
    with components.state.begin() as connection:
        paused = sending.current_pause(connection)
        if paused is None or paused.key_fingerprint is None:
            return  # an operator's pause ends only by `propready sending resume`
        sending.resume(connection)
        audit.record(
            connection,
            AuditKind.SENDING_RESUMED,
            now,
            detail={"reason": "the vendor accepted the new API key", "was": paused.reason},
        )
    log.warning("sending_resumed", reason="the vendor accepted the new API key")


def handle_ambiguous(
    components: Components,
    order: Order,
    reason: str,
    now: datetime,
    summary: CycleSummary,
    *,
    resend_at_once: bool = False,
) -> None:
    """The POST may have been saved: re-send only under the vendor's duplicate protection.

    `resend_at_once` is for recovery after a crash: the vendor gave no sign of trouble, so
    there is nothing to back off from.
    """
    attempts = int(order.attempts)
    if _covered(components, order, now) and attempts < components.settings.orders.max_attempts:
        summary.resend_covered += 1
        delay = 0.0 if resend_at_once else retry_delay(components, attempts)
        finish(
            components,
            order,
            OrderState.PLANNED,
            now,
            AuditKind.ORDER_RESEND_SCHEDULED,
            {
                "reason": reason,
                "attempts": attempts,
                "retry_in_seconds": round(delay, 1),
                "why_safe": "the vendor's duplicate protection covers this order; a `duplicate` "
                "answer will mean it was already placed",
            },
            last_error=reason,
            next_attempt_at=now + timedelta(seconds=delay),
            ambiguous_at=now,
        )
        return
    summary.unknown += 1
    finish(
        components,
        order,
        OrderState.UNKNOWN,
        now,
        AuditKind.ORDER_OUTCOME_UNKNOWN,
        {"reason": reason, "attempts": attempts},
        last_error=reason,
        ambiguous_at=now,
    )


def retry_or_fail(
    components: Components,
    order: Order,
    exc: Exception,
    now: datetime,
    summary: CycleSummary,
) -> None:
    """The request provably never reached the vendor: try again later, up to max_attempts."""
    attempts = int(order.attempts)
    if attempts >= components.settings.orders.max_attempts:
        if order.ambiguous_at is not None:
            # An earlier attempt may still have been saved: that is unknown, not failed.
            handle_ambiguous(components, order, f"gave up after {attempts} attempts", now, summary)
            return
        summary.failed += 1
        finish(
            components,
            order,
            OrderState.FAILED,
            now,
            AuditKind.ORDER_FAILED,
            {"reason": str(exc), "attempts": attempts},
            last_error=str(exc),
        )
        return
    summary.retried += 1
    delay = retry_delay(components, attempts)
    finish(
        components,
        order,
        OrderState.PLANNED,
        now,
        AuditKind.ORDER_RETRY_SCHEDULED,
        {"reason": str(exc), "attempts": attempts, "retry_in_seconds": round(delay, 1)},
        last_error=str(exc),
        next_attempt_at=now + timedelta(seconds=delay),
    )


def retry_delay(components: Components, attempts: int) -> float:
    """Jittered exponential backoff: half to all of 5 s, 10 s, 20 s, ... (capped at 30 min)."""
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return components.jitter.uniform(ceiling / 2, ceiling)


def finish(
    components: Components,
    order: Order,
    state: OrderState,
    now: datetime,
    kind: AuditKind,
    detail: dict[str, Any],
    **outcome: Any,
) -> None:
    """Phase 4: the outcome and its audit row in one transaction, if the order is still ours."""
    with components.state.begin() as connection:
        recorded = outbox.set_outcome(
            connection,
            order.id,
            state,
            now,
            expected_state=OrderState.SENDING,
            expected_owner=order.lease_owner,
            **outcome,
        )
        if not recorded:
            # Our lease expired and recovery moved the order on meanwhile. Keep what we learnt.
            kind, detail = AuditKind.ORDER_OUTCOME_AFTER_LEASE_LOST, {"outcome": kind, **detail}
        audit.record(
            connection, kind, now, **order_refs(order), detail={"state": state.value, **detail}
        )
        if recorded and state in (OrderState.REJECTED, OrderState.FAILED):
            reopen_readiness(connection, order, now, f"the order was {state.value}")
    (log.warning if state in (OrderState.REJECTED, OrderState.UNKNOWN) else log.info)(
        kind,
        external_order_id=order.external_order_id,
        property=order.external_property_id,
        state=state.value,
    )


def reopen_readiness(connection: sa.Connection, order: Order, now: datetime, reason: str) -> None:
    """No vendor order came of this readiness, for a reason a person can fix (the vendor refused
    the data, it could not be reached, an operator canceled it before it was sent or found it
    never placed): the readiness stays open and is planned again when the home's row, the rules
    or the configuration change (design.md 8.1)."""
    if properties.reopen_event(connection, order.event_id, reason):
        audit.record(
            connection,
            AuditKind.READINESS_REOPENED,
            now,
            **order_refs(order),
            detail={
                "reason": reason,
                "what_next": "planned again when the home's row, the rules or the configuration "
                "change; `propready reorder` orders it now",
            },
        )


def _still_ours(components: Components, order: Order, now: datetime, summary: CycleSummary) -> bool:
    """After the rate-limit wait: park the order if the daemon is stopping, else renew the lease.

    Nothing has left the process yet, so parking (back to `planned`, the attempt not counted) is
    always safe. A lease that could not be renewed was taken over by recovery elsewhere: this
    sender then backs off without sending.
    """
    lease = _lease(components)
    with components.state.begin() as connection:
        if components.stop_requested.is_set():
            parked = outbox.park(connection, order.id, components.owner, now)
            if parked:
                summary.parked += 1
                audit.record(
                    connection,
                    AuditKind.ORDER_PARKED,
                    now,
                    **order_refs(order),
                    detail={
                        "state": OrderState.PLANNED.value,
                        "reason": "the daemon is stopping; the order was not sent and will be "
                        "sent by the next daemon",
                    },
                )
            return False
        renewed = outbox.renew_lease(connection, order.id, components.owner, now, lease)
    if not renewed:
        log.warning("lease_lost_before_send", external_order_id=order.external_order_id)
    return renewed


def order_refs(order: Order) -> dict[str, Any]:
    return {
        "external_property_id": order.external_property_id,
        "rule_id": order.rule_id,
        "rules_version": order.rules_version,
        "event_id": order.event_id,
        "order_id": order.id,
        "external_order_id": order.external_order_id,
    }


def _covered(components: Components, order: Order, now: datetime) -> bool:
    hours = components.settings.planomatic.vendor_duplicate_protection_hours
    return resend_is_covered(order.created_at, now, hours, COVERAGE_MARGIN)
