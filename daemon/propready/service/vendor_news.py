"""Applying the vendor's news to orders: stored webhook deliveries (and retrieve answers).

`propready serve` stores each delivery once (table webhook_delivery, state pending). This step,
run by the daemon's `apply_news` job every `[daemon] apply_news_interval_seconds` and by
`run --once`, applies them one transaction each:

    claim one pending delivery (FOR UPDATE SKIP LOCKED on PostgreSQL; BEGIN IMMEDIATE on SQLite)
    -> match its order (vendor order id, request id, else external_order_id) and lock it
    -> apply it (`apply_to_order`): status by rank and event time (core/vendor_status.py),
       deliverables, the vendor's price, delivered_at, audit rows
    -> mark the delivery applied (or unmatched), commit.

A crash before the commit leaves the delivery pending and the order untouched; the next run
applies it. Applying is idempotent: news that is not newer than the order's status changes no
status and audits nothing, so a repeated, replayed or late delivery changes nothing twice.

A delivery naming no order (or an order still being sent) is kept `unmatched` with the reason;
`requeue_matching` makes it pending again once such an order is placed or unknown.

When the vendor cancels an order, the rule's `on_vendor_cancel` decides: `notify` (default)
leaves the attention item (vendor_canceled); `reorder` re-orders the home through
`service.reorder` (rules, duplicate window, budgets), at most once per readiness, audited with
the vendor's reason. The re-order runs after the cancel is committed; `pending_reorders` finds a
cancel whose re-order a crash cut off, so it is not lost either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
import structlog

from propready.adapters.source import SourceUnavailable
from propready.adapters.store import audit, deliverables, deliveries, lifecycle, outbox, writebacks
from propready.adapters.store.engine import reading
from propready.adapters.store.schema import audit_log
from propready.core.audit_kinds import AuditKind
from propready.core.orders import Order, OrderState
from propready.core.vendor_news import MalformedNews, VendorNews
from propready.core.vendor_status import StatusPoint, is_canceled, is_delivered, is_newer
from propready.core.writeback import WritebackParams
from propready.service.components import Components, CycleSummary, crash_point
from propready.service.prices import apply_vendor_price
from propready.service.send import order_refs

log = structlog.get_logger("propready.vendor_news")

Outcome = Literal["applied", "unchanged", "unmatched", "malformed"]
REQUEUE_EVERY_SECONDS = 30.0  # how often unmatched deliveries are matched again
AUTO_REORDER_BY = "propready (on_vendor_cancel: reorder)"
UNABLE_EVENT = "appointment.unable_to_complete"


@dataclass
class ApplyResult:
    """What applying one piece of news did to its order."""

    changed: bool = False  # the status, the price, delivered_at or the order's state moved
    delivered: bool = False
    canceled: bool = False
    reorder: Order | None = None  # a vendor cancel whose rule says reorder
    reason: str | None = None


@dataclass
class Applier:
    """The apply step with its memory (when unmatched deliveries were last matched again)."""

    components: Components
    clock: Callable[[], datetime]
    last_requeue: float = field(default=-1e18)

    def run(self, summary: CycleSummary, *, limit: int = 1000, housekeeping: bool = False) -> int:
        """Apply pending deliveries (up to `limit`); the number handled."""
        parts = self.components
        if housekeeping or time.monotonic() - self.last_requeue >= REQUEUE_EVERY_SECONDS:
            self.last_requeue = time.monotonic()
            with parts.state.begin() as connection:
                summary.news_requeued += lifecycle.requeue_matching(connection)
            for order in pending_reorders(parts):
                reorder_after_cancel(parts, order, self.clock(), summary)
        with reading(parts.state) as connection:
            if not lifecycle.has_pending(connection):
                return 0
        handled = 0
        while handled < limit and not parts.stop_requested.is_set():
            now = self.clock()
            with parts.state.begin() as connection:
                claimed = deliveries.claim_pending(connection, 1)
                if not claimed:
                    break
                outcome, result = apply_delivery(connection, parts, claimed[0], now)
                crash_point("apply_before_commit")
            handled += 1
            _count(summary, outcome, result)
            if result.reorder is not None:
                reorder_after_cancel(parts, result.reorder, self.clock(), summary)
        return handled


def apply_news(components: Components, now: Callable[[], datetime], summary: CycleSummary) -> int:
    """One pass for `run --once`: match unmatched deliveries again, then apply every pending."""
    return Applier(components, now).run(summary, limit=1_000_000, housekeeping=True)


def _count(summary: CycleSummary, outcome: Outcome, result: ApplyResult) -> None:
    if outcome == "applied":
        summary.news_applied += 1
    elif outcome == "unchanged":
        summary.news_unchanged += 1
    elif outcome == "unmatched":
        summary.news_unmatched += 1
    else:
        summary.news_malformed += 1
    if result.delivered:
        summary.delivered += 1
    if result.canceled:
        summary.vendor_canceled += 1


def apply_delivery(
    connection: sa.Connection,
    components: Components,
    delivery: deliveries.Delivery,
    now: datetime,
) -> tuple[Outcome, ApplyResult]:
    """Apply one claimed delivery inside the caller's transaction and mark it."""
    news = delivery.news()
    if isinstance(news, MalformedNews):  # stored as pending by an older receiver: never applied
        lifecycle.mark_malformed(connection, delivery.id, news.reason)
        return "malformed", ApplyResult()
    order = lifecycle.find_order_for_news(
        connection,
        vendor_order_id=news.vendor_order_id,
        vendor_request_id=news.vendor_request_id,
        external_order_id=news.external_order_id,
    )
    if order is None:
        deliveries.mark_unmatched(connection, delivery.id, _no_order(news))
        return "unmatched", ApplyResult()
    if order.state not in lifecycle.APPLIABLE_STATES:
        deliveries.mark_unmatched(
            connection,
            delivery.id,
            f"order {order.external_order_id} is {order.state.value}; applied once it is placed",
        )
        return "unmatched", ApplyResult()
    result = apply_to_order(
        connection, components, order, news, now, source="webhook", delivery_id=delivery.id
    )
    deliveries.mark_applied(connection, delivery.id, now)
    return ("applied" if result.changed else "unchanged"), result


def apply_to_order(
    connection: sa.Connection,
    components: Components,
    order: Order,
    news: VendorNews,
    now: datetime,
    *,
    source: Literal["webhook", "retrieve"],
    delivery_id: int | None = None,
) -> ApplyResult:
    """Apply one piece of news to its (locked) order; idempotent (module docstring)."""
    result = ApplyResult()
    refs = order_refs(order)
    values: dict[str, Any] = {"vendor_news_at": now}
    if order.vendor_order_id is None and news.vendor_order_id is not None:
        values["vendor_order_id"] = news.vendor_order_id
    if order.vendor_request_id is None and news.vendor_request_id is not None:
        values["vendor_request_id"] = news.vendor_request_id
    where: dict[str, Any] = {"source": source}
    if delivery_id is not None:
        where["delivery_id"] = delivery_id
    state = order.state
    if state == OrderState.UNKNOWN:
        # The vendor has the order: the ambiguous send did reach it.
        outbox.set_outcome(
            connection,
            order.id,
            OrderState.PLACED,
            now,
            expected_state=OrderState.UNKNOWN,
            vendor_order_id=news.vendor_order_id,
            vendor_request_id=news.vendor_request_id,
        )
        state = OrderState.PLACED
        result.changed = True
        audit.record(
            connection,
            AuditKind.ORDER_RESOLVED,
            now,
            **refs,
            detail={
                "from": "unknown",
                "to": "placed",
                "reason": f"the vendor's news names it ({source})",
                "vendor_order_id": news.vendor_order_id,
                **where,
            },
        )
    current = StatusPoint(order.vendor_status, order.vendor_status_at)
    incoming = StatusPoint(news.status, news.event_at)
    newer = is_newer(current, incoming)
    older = order.vendor_status is not None and is_newer(incoming, current)
    if newer:
        values["vendor_status"] = news.status
        values["vendor_status_at"] = news.event_at
        values["updated_at"] = now
        result.changed = True
        audit.record(
            connection,
            AuditKind.ORDER_STATUS_CHANGED,
            now,
            **refs,
            detail={
                "from": order.vendor_status,
                "to": news.status,
                "event": news.event,
                "event_at": news.event_at.isoformat() if news.event_at else None,
                "state": (
                    OrderState.CANCELED.value
                    if is_canceled(news.status) and state == OrderState.PLACED
                    else state.value
                ),
                **where,
            },
        )
    rows = deliverables.link_rows(news.links) + deliverables.photo_rows(news.photos)
    deliverables.upsert(connection, order.id, rows, now, overwrite=not older)
    if not older and apply_vendor_price(connection, order, news.price_cents, now):
        result.changed = True
    if newer and is_canceled(news.status) and state == OrderState.PLACED:
        # Canceled by PlanOmatic: the duplicate window is free again.
        outbox.set_outcome(
            connection, order.id, OrderState.CANCELED, now, expected_state=OrderState.PLACED
        )
        mode = on_vendor_cancel(components, order)
        result.canceled = True
        result.reason = _cancel_reason(news)
        if mode == "reorder":
            result.reorder = order
        audit.record(
            connection,
            AuditKind.ORDER_CANCELED_BY_VENDOR,
            now,
            **refs,
            detail={"reason": result.reason, "on_vendor_cancel": mode, **where},
        )
    if newer and (news.event == UNABLE_EVENT or news.unable_to_complete):
        audit.record(
            connection,
            AuditKind.ORDER_UNABLE_TO_COMPLETE,
            now,
            **refs,
            detail={"reason": _unable_reason(news), **where},
        )
    if (
        is_delivered(news.status)
        and order.delivered_at is None
        and not is_canceled(order.vendor_status)
    ):
        delivered_at = news.event_at or now
        values["delivered_at"] = delivered_at
        result.changed = result.delivered = True
        audit.record(
            connection,
            AuditKind.ORDER_DELIVERED,
            now,
            **refs,
            detail={
                "delivered_at": delivered_at.isoformat(),
                "links": sorted(news.links),
                "photos": len([row for row in rows if row["kind"] == deliverables.PHOTO]),
                **where,
            },
        )
        if components.settings.writeback.enabled:
            _enqueue_writeback(connection, order, news, delivered_at, now)
    lifecycle.record_news(connection, order.id, values)
    return result


def _enqueue_writeback(
    connection: sa.Connection, order: Order, news: VendorNews, delivered_at: datetime, now: datetime
) -> None:
    """Queue the order's write-back in the transaction that records its delivery, so both commit
    together or neither does (the transactional outbox); once per order, whatever repeats."""
    photos = len(news.photos)
    writebacks.enqueue_writeback(
        connection,
        order.id,
        WritebackParams(
            external_property_id=order.external_property_id,
            external_order_id=order.external_order_id,
            vendor_order_id=news.vendor_order_id or order.vendor_order_id,
            order_status=news.status or "delivered",
            delivered_at=delivered_at.astimezone(UTC),
            photo_manage_link=news.links.get("photo_manage_link"),
            zillow_3d_link=news.links.get("zillow_3d_link") or news.links.get("tour_link"),
            photo_count=photos or None,
        ),
        now,
    )


def on_vendor_cancel(components: Components, order: Order) -> Literal["reorder", "notify"]:
    """The rule's `on_vendor_cancel` for this order (notify when the rule is gone)."""
    for rule in components.rules.rules:
        if rule.id == order.rule_id:
            return rule.on_vendor_cancel
    return "notify"


def _cancel_reason(news: VendorNews) -> str:
    parts = [part for part in (news.cancelation_reason, news.cancelation_notes) if part]
    return (
        ": ".join(parts)[:500] if parts else f"the vendor canceled it ({news.event or news.status})"
    )


def _unable_reason(news: VendorNews) -> str:
    parts = [
        part for part in (news.unable_to_complete_reason, news.unable_to_complete_notes) if part
    ]
    for appointment in news.appointments:
        parts.extend(
            part
            for part in (appointment.cancelation_reason, appointment.cancelation_notes)
            if part and part not in parts
        )
    return "; ".join(parts)[:500] if parts else "the appointment could not be completed"


def _no_order(news: VendorNews) -> str:
    names = [
        f"{label} {value}"
        for label, value in (
            ("vendor order id", news.vendor_order_id),
            ("request id", news.vendor_request_id),
            ("external order id", news.external_order_id),
        )
        if value
    ]
    return "no order of ours has " + " or ".join(names)


# --- on_vendor_cancel: reorder ----------------------------------------------------------------


def pending_reorders(components: Components) -> list[Order]:
    """Vendor cancels whose rule said reorder and whose re-order was never requested (a crash
    between the cancel's commit and the re-order)."""
    with reading(components.state) as connection:
        cancels = connection.execute(
            sa.select(audit_log.c.order_id, audit_log.c.detail).where(
                audit_log.c.kind == AuditKind.ORDER_CANCELED_BY_VENDOR.value
            )
        ).all()
        wanted = [
            int(order_id)
            for order_id, detail in cancels
            if order_id is not None
            and isinstance(detail, dict)
            and detail.get("on_vendor_cancel") == "reorder"
        ]
        if not wanted:
            return []
        done = _auto_reorders(connection)
        found = []
        for order_id in wanted:
            order = outbox.get_order(connection, order_id)
            if order is not None and order.external_order_id not in done:
                found.append(order)
        return found


def _auto_reorders(connection: sa.Connection) -> dict[str, dict[str, Any]]:
    """Automatic re-order requests, by the canceled order they answer."""
    rows = connection.execute(
        sa.select(audit_log.c.event_id, audit_log.c.detail).where(
            audit_log.c.kind == AuditKind.REORDER_REQUESTED.value
        )
    ).all()
    found: dict[str, dict[str, Any]] = {}
    for event_id, detail in rows:
        if isinstance(detail, dict) and detail.get("by") == AUTO_REORDER_BY:
            canceled = detail.get("vendor_canceled_order")
            if isinstance(canceled, str):
                found[canceled] = {**detail, "event_id": event_id}
    return found


def reorder_after_cancel(
    components: Components, order: Order, now: datetime, summary: CycleSummary
) -> None:
    """Re-order the home of a vendor-canceled order, at most once per readiness."""
    from propready.service.reorder import ReorderRefused, reorder  # reorder imports this layer

    with reading(components.state) as connection:
        done = _auto_reorders(connection)
        reason = _reason_of_cancel(connection, order.id)
    if order.external_order_id in done:
        return
    already = [
        canceled
        for canceled, detail in done.items()
        if order.event_id is not None
        and detail.get("event_id") == order.event_id
        and detail.get("outcome") == "ordered"
    ]
    trigger = _trigger_of(components, order)
    if already:
        # One automatic re-order per readiness: this one is for a person (attention item).
        with components.state.begin() as connection:
            audit.record(
                connection,
                AuditKind.REORDER_REQUESTED,
                now,
                external_property_id=order.external_property_id,
                trigger_name=trigger,
                event_id=order.event_id,
                detail={
                    "reason": f"vendor canceled {order.external_order_id}: {reason}",
                    "by": AUTO_REORDER_BY,
                    "ignore_window": False,
                    "vendor_canceled_order": order.external_order_id,
                    "outcome": "refused",
                    "why": f"this readiness was already re-ordered once (after {already[0]})",
                },
            )
        return
    try:
        reorder(
            components,
            order.external_property_id,
            reason=f"vendor canceled {order.external_order_id}: {reason}",
            by=AUTO_REORDER_BY,
            now=now,
            trigger=trigger,
            vendor_canceled_order=order.external_order_id,
        )
        summary.vendor_reordered += 1
    except ReorderRefused as exc:  # audited by reorder(); the attention item stays
        log.warning(
            "vendor_cancel_reorder_refused", external_order_id=order.external_order_id, why=str(exc)
        )
    except (SourceUnavailable, sa.exc.SQLAlchemyError, OSError) as exc:
        # The source or the state database is down: pending_reorders tries again.
        log.warning(
            "vendor_cancel_reorder_failed",
            external_order_id=order.external_order_id,
            error=type(exc).__name__,
        )


def _reason_of_cancel(connection: sa.Connection, order_id: int) -> str:
    detail = connection.execute(
        sa.select(audit_log.c.detail)
        .where(
            audit_log.c.order_id == order_id,
            audit_log.c.kind == AuditKind.ORDER_CANCELED_BY_VENDOR.value,
        )
        .order_by(audit_log.c.id.desc())
        .limit(1)
    ).scalar()
    if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
        return str(detail["reason"])
    return "no reason given"


def _trigger_of(components: Components, order: Order) -> str | None:
    if order.event_id is None:
        return None
    from propready.adapters.store.schema import readiness_event

    with reading(components.state) as connection:
        name = connection.execute(
            sa.select(readiness_event.c.trigger_name).where(readiness_event.c.id == order.event_id)
        ).scalar()
    return str(name) if name is not None and name in components.rules.triggers else None
