"""Status sync: ask PlanOmatic where each placed order stands, and record every change.

The API has no list or search, so each open order costs one `retrieve` under the shared rate
limit. Webhooks (service/vendor_news.py) bring most news; retrieve is the fallback:

- `reconcile_statuses` (the daemon's status_sync job, `run --once`) retrieves only placed orders
  with no news for `[orders] reconcile_after_hours`, the longest without news first, and paces
  its retrieves on their own schedule at `[planomatic] sync_share` of the rate limit (and on the
  shared schedule too), so creates always keep the rest of it;
- `sync_statuses` (`propready orders sync`) retrieves placed orders not checked within
  `min_interval` (None: all), on demand.

A retrieve answer is applied like a webhook delivery (`vendor_news.apply_to_order`): by rank,
idempotent, audited, with its deliverables and price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog

from propready.adapters.planomatic import PlanomaticClient, VendorError
from propready.adapters.store import audit, lifecycle, outbox
from propready.core.audit_kinds import AuditKind
from propready.core.orders import VENDOR_CANCELED_STATUSES, OrderState
from propready.core.vendor_news import VendorNews, parse_vendor_news
from propready.service.components import Components, CycleSummary
from propready.service.send import order_refs
from propready.service.vendor_news import ApplyResult, apply_to_order, reorder_after_cancel

log = structlog.get_logger("propready.sync")


@dataclass(frozen=True)
class StatusChange:
    external_order_id: str
    external_property_id: str
    vendor_order_id: str
    old_status: str | None
    new_status: str | None
    state: str


def sync_statuses(
    components: Components,
    now: datetime,
    summary: CycleSummary,
    *,
    min_interval: timedelta | None = timedelta(minutes=15),
    limit: int = 100,
) -> list[StatusChange]:
    """Retrieve up to `limit` placed orders not checked within `min_interval` (None: any);
    record each change in the audit log."""
    if components.client is None:
        return []
    checked_before = now - min_interval if min_interval is not None else None
    with components.state.begin() as connection:
        due = outbox.orders_to_sync(connection, checked_before, limit)
    changes = []
    for order_id in due:
        if components.stop_requested.is_set():
            break  # nothing is lost: the next daemon checks these orders
        with components.state.begin() as connection:
            if not outbox.claim_status_check(connection, order_id, checked_before, now):
                continue  # another host is checking it
        change = _sync_one(components, components.client, order_id, now, summary)
        if change is not None:
            changes.append(change)
    return changes


def reconcile_statuses(
    components: Components, now: datetime, summary: CycleSummary, *, limit: int = 100
) -> list[StatusChange]:
    """Retrieve up to `limit` placed orders without vendor news for reconcile_after_hours,
    the longest without news first, at most `sync_share` of the rate limit."""
    if components.client is None:
        return []
    settings = components.settings
    news_before = now - timedelta(hours=settings.orders.reconcile_after_hours)
    checked_before = now - timedelta(seconds=settings.daemon.status_sync_interval_seconds)
    with components.state.begin() as connection:
        due = lifecycle.orders_to_reconcile(connection, news_before, checked_before, limit)
    changes = []
    for order_id in due:
        if components.stop_requested.is_set():
            break
        with components.state.begin() as connection:
            if not lifecycle.claim_reconcile(
                connection, order_id, news_before, checked_before, now
            ):
                continue  # another host is retrieving it, or news arrived meanwhile
        change = _sync_one(
            components, components.client, order_id, now, summary, pacing="reconcile"
        )
        if change is not None:
            changes.append(change)
    return changes


MAX_BACKLOG_COUNTED = 1_000_000  # counting stops here; a backlog that size is news enough


@dataclass(frozen=True)
class SyncBacklog:
    """Placed orders the vendor still moves along: due now, and checked too recently."""

    due: int
    recently_checked: int


def sync_backlog(
    components: Components, now: datetime, min_interval: timedelta | None
) -> SyncBacklog:
    """How many orders a sync with `min_interval` would retrieve, and how many it skips."""
    checked_before = now - min_interval if min_interval is not None else None
    with components.state.begin() as connection:
        every = len(outbox.orders_to_sync(connection, None, MAX_BACKLOG_COUNTED))
        due = (
            every
            if checked_before is None
            else len(outbox.orders_to_sync(connection, checked_before, MAX_BACKLOG_COUNTED))
        )
    return SyncBacklog(due, every - due)


def _sync_one(
    components: Components,
    client: PlanomaticClient,
    order_id: int,
    now: datetime,
    summary: CycleSummary,
    *,
    pacing: Literal["reconcile", "on_demand"] = "on_demand",
) -> StatusChange | None:
    with components.state.begin() as connection:
        order = outbox.get_order(connection, order_id)
    if order is None or order.vendor_order_id is None:
        return None
    if pacing == "reconcile" and components.sync_pacer is not None:
        # Reconciliation's own schedule (sync_share of the limit) first, then a slot on the
        # shared one: retrieves never take more than their share from creates.
        components.sync_pacer.wait(components.state)
    components.pacer.wait(components.state)
    try:
        vendor = client.retrieve_order(str(order.vendor_order_id))
    except VendorError as exc:
        # Nothing changes locally; the next sync tries again. Not audited: no business event.
        log.warning("status_sync_failed", external_order_id=order.external_order_id, error=str(exc))
        return None
    summary.status_checked += 1
    news = parse_vendor_news(dict(vendor.raw))
    if isinstance(news, VendorNews) and news.status is not None:
        return _apply_retrieved(components, order_id, news, now, summary)
    old, new = order.vendor_status, vendor.order_status
    state = OrderState(order.state)
    with components.state.begin() as connection:
        outbox.record_vendor_status(connection, order_id, new, now)
        if new == old:
            return None
        summary.status_changed += 1
        if new in VENDOR_CANCELED_STATUSES:
            # Canceled at the vendor (by PlanOmatic or in its portal): the window is free again.
            outbox.set_outcome(
                connection, order_id, OrderState.CANCELED, now, expected_state=OrderState.PLACED
            )
            state = OrderState.CANCELED
        audit.record(
            connection,
            AuditKind.ORDER_STATUS_CHANGED,
            now,
            **order_refs(order),
            detail={"from": old, "to": new, "state": state.value},
        )
    return StatusChange(
        str(order.external_order_id),
        str(order.external_property_id),
        str(order.vendor_order_id),
        old,
        new,
        state.value,
    )


def _apply_retrieved(
    components: Components,
    order_id: int,
    news: VendorNews,
    now: datetime,
    summary: CycleSummary,
) -> StatusChange | None:
    """A retrieve answer applied like a delivery: by rank, with deliverables and price."""
    result = ApplyResult()
    with components.state.begin() as connection:
        order = lifecycle.lock_order(connection, order_id)
        if order is None or order.state not in lifecycle.APPLIABLE_STATES:
            return None
        old = order.vendor_status
        result = apply_to_order(connection, components, order, news, now, source="retrieve")
        after = lifecycle.lock_order(connection, order_id)
    assert after is not None
    if result.reorder is not None:
        reorder_after_cancel(components, result.reorder, now, summary)
    if result.delivered:
        summary.delivered += 1
    if result.canceled:
        summary.vendor_canceled += 1
    if after.vendor_status == old:
        return None
    summary.status_changed += 1
    return StatusChange(
        str(order.external_order_id),
        str(order.external_property_id),
        str(order.vendor_order_id),
        old,
        after.vendor_status,
        after.state.value,
    )
