"""Everything waiting for a person, from current state; acknowledging and snoozing items.

The list is computed from what is true now (orders, the quarantine, the source's health, the
audit log's latest word on a home or order), not from notification facts: an item disappears
when the state that made it does (an order approved, a row fixed). Silences hide items: a snooze
until its end, an acknowledgement until the item changes (its `version`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from propready.adapters.store import attention as store
from propready.adapters.store import audit, properties
from propready.core.attention import (
    AttentionItem,
    AttentionKind,
    Silence,
    is_overdue,
    oldest_first,
)
from propready.core.audit_kinds import AuditKind
from propready.core.notify_facts import reason_text
from propready.core.orders import OrderState
from propready.log import REDACTOR
from propready.settings import Settings

CHECKPOINT = "source"  # the poll's checkpoint row (service.checkpoints.CHECKPOINT)


@dataclass(frozen=True, slots=True)
class Listed:
    item: AttentionItem
    overdue: bool
    silence: Silence | None  # set when the item is hidden (shown only with --all)


class AttentionError(ValueError):
    """An acknowledgement or snooze that cannot be recorded; the message says why."""


def _scrub(text: str | None) -> str:
    return REDACTOR.scrub_text(" ".join((text or "").split()))[:300]


def _waiting_orders(
    kind: AttentionKind, state: OrderState, since: str, what: Callable[[store.OrderRef], str]
) -> Callable[[sa.Connection, store.Window], list[AttentionItem]]:
    """Items of orders in `state`, waiting since their `since` (created_at or updated_at)."""

    def read(connection: sa.Connection, window: store.Window) -> list[AttentionItem]:
        return [
            AttentionItem(
                kind,
                order.external_order_id,
                getattr(order, since),
                what(order),
                f"{order.state}@{order.updated_at.isoformat()}",
                order.external_property_id,
                order.external_order_id,
            )
            for order in store.orders_in_state(connection, state, since, window)
        ]

    return read


_approvals = _waiting_orders(
    AttentionKind.APPROVAL,
    OrderState.AWAITING_APPROVAL,
    "created_at",
    lambda order: f"order for {order.external_property_id} waits for approval",
)
_unknowns = _waiting_orders(
    AttentionKind.UNKNOWN,
    OrderState.UNKNOWN,
    "updated_at",
    lambda order: _scrub(f"may exist at PlanOmatic: {order.last_error or 'outcome unknown'}"),
)


def _quarantined(connection: sa.Connection, window: store.Window) -> list[AttentionItem]:
    return [
        AttentionItem(
            AttentionKind.QUARANTINED,
            row.row_key,
            row.first_seen_at,
            _scrub(f"column {row.column_name}: {row.reason}"),
            row.row_hash,
            None if row.row_key.startswith("#") else row.row_key,
        )
        for row in store.quarantined_rows(connection, window)
    ]


@dataclass(frozen=True)
class _PagedKind:
    """A kind that can hold thousands of items (a backlog waiting for approval, hostile PM
    rows): the start page reads a window of it, and counts the rest."""

    read: Callable[[sa.Connection, store.Window], list[AttentionItem]]
    count: Callable[[sa.Connection], int]


PAGED: Mapping[AttentionKind, _PagedKind] = {
    AttentionKind.APPROVAL: _PagedKind(
        _approvals, lambda c: store.count_orders_in_state(c, OrderState.AWAITING_APPROVAL)
    ),
    AttentionKind.UNKNOWN: _PagedKind(
        _unknowns, lambda c: store.count_orders_in_state(c, OrderState.UNKNOWN)
    ),
    AttentionKind.QUARANTINED: _PagedKind(_quarantined, store.count_quarantined_rows),
}


def current_items(
    connection: sa.Connection,
    settings: Settings,
    now: datetime,
    *,
    skip: frozenset[AttentionKind] = frozenset(),
) -> list[AttentionItem]:
    """Every item waiting for a person now, oldest first (silences not applied); none of the
    kinds in `skip`."""
    items: list[AttentionItem] = []
    for kind in (AttentionKind.APPROVAL, AttentionKind.UNKNOWN):
        if kind not in skip:
            items.extend(PAGED[kind].read(connection, store.EVERYTHING))
    for order in store.rejected_orders(connection):
        items.append(
            AttentionItem(
                AttentionKind.REJECTED,
                order.external_order_id,
                order.updated_at,
                _scrub(f"rejected: {order.last_error or 'see the audit log'}"),
                f"{order.state}@{order.updated_at.isoformat()}",
                order.external_property_id,
                order.external_order_id,
            )
        )
    for note in store.not_plannable_homes(connection):
        home = note.external_property_id or "?"
        items.append(
            AttentionItem(
                AttentionKind.NOT_PLANNABLE,
                home,
                note.at,
                _scrub(reason_text(note.detail, REDACTOR.scrub_text) or "could not be planned"),
                str(note.id),
                home,
            )
        )
    if AttentionKind.QUARANTINED not in skip:
        items.extend(_quarantined(connection, store.EVERYTHING))
    refusal = store.api_key_refusal(connection)
    if refusal is not None:
        items.append(
            AttentionItem(
                AttentionKind.API_KEY_REFUSED,
                "api_key",
                refusal.at,
                _scrub(reason_text(refusal.detail, REDACTOR.scrub_text) or "key refused"),
                str(refusal.id),
            )
        )
    items.extend(_source_items(connection, now))
    stuck_after = timedelta(hours=settings.notify.stuck_after_hours)
    for stuck in store.stuck_orders(connection, now - stuck_after):
        order = stuck.order
        items.append(
            AttentionItem(
                AttentionKind.STUCK,
                order.external_order_id,
                stuck.last_progress + stuck_after,
                f"PlanOmatic status {order.vendor_status or 'not known yet'} since "
                f"{stuck.last_progress:%Y-%m-%d %H:%M}Z",
                stuck.last_progress.isoformat(),
                order.external_property_id,
                order.external_order_id,
            )
        )
    for note in store.vendor_cancels(connection):
        what = reason_text(note.detail, REDACTOR.scrub_text) or note.kind.replace("_", " ")
        items.append(
            AttentionItem(
                AttentionKind.VENDOR_CANCELED,
                note.external_order_id or str(note.id),
                note.at,
                _scrub(what),
                str(note.id),
                note.external_property_id,
                note.external_order_id,
            )
        )
    for note in store.failed_writebacks(connection):
        items.append(
            AttentionItem(
                AttentionKind.WRITEBACK_FAILED,
                note.external_order_id or str(note.id),
                note.at,
                _scrub(reason_text(note.detail, REDACTOR.scrub_text) or "write-back failed"),
                str(note.id),
                note.external_property_id,
                note.external_order_id,
            )
        )
    return oldest_first(items)


def _source_items(connection: sa.Connection, now: datetime) -> list[AttentionItem]:
    checkpoint = properties.load_checkpoint(connection, CHECKPOINT)
    failures = checkpoint.consecutive_failures
    if not failures:
        return []
    last_success = checkpoint.last_success_at
    since = last_success or checkpoint.last_poll_at or now
    return [
        AttentionItem(
            AttentionKind.SOURCE_FAILING,
            "source",
            since,
            _scrub(f"{failures} polls failed in a row; last error: {checkpoint.last_error}"),
            f"after:{last_success.isoformat() if last_success else 'never'}",
        )
    ]


def attention_list(
    engine: sa.Engine, settings: Settings, now: datetime, *, include_silenced: bool = False
) -> list[Listed]:
    """The items to show: not silenced (or all of them), each with whether it is overdue."""
    with engine.connect() as connection:
        items = current_items(connection, settings, now)
        quiet = store.silences(connection)
    overrides = settings.notify.overdue_after_hours
    shown = []
    for item in items:
        silence = quiet.get(item.key)
        hidden = silence if silence is not None and silence.hides(item, now) else None
        if hidden is not None and not include_silenced:
            continue
        shown.append(Listed(item, is_overdue(item, now, overrides), hidden))
    return shown


@dataclass(frozen=True, slots=True)
class AttentionPage:
    listed: list[Listed]  # the oldest `shown` items not silenced
    total: int  # every item not silenced


def attention_page(
    engine: sa.Engine, settings: Settings, now: datetime, shown: int
) -> AttentionPage:
    """The start page: the oldest `shown` items not silenced, and how many there are in all,
    the same as `attention_list` gives, without reading every item of the large kinds.

    Of each kind in PAGED it reads the oldest `shown` + (its silences) items, which holds its
    oldest `shown` unsilenced ones, and counts the rest; a silence of an item beyond that window
    is looked up by name, so the total stays exact.
    """
    overrides = settings.notify.overdue_after_hours
    with engine.connect() as connection:
        quiet = store.silences(connection)
        candidates: list[AttentionItem] = []
        total = 0
        for kind, paged in PAGED.items():
            visible, count = _paged_items(connection, kind, paged, quiet, shown, now)
            candidates.extend(visible)
            total += count
        rest = current_items(connection, settings, now, skip=frozenset(PAGED))
    visible_rest = [i for i in rest if not _hidden(quiet.get(i.key), i, now)]
    top = oldest_first([*candidates, *visible_rest])[:shown]
    listed = [Listed(item, is_overdue(item, now, overrides), None) for item in top]
    return AttentionPage(listed, total + len(visible_rest))


def _hidden(silence: Silence | None, item: AttentionItem, now: datetime) -> bool:
    return silence is not None and silence.hides(item, now)


def _paged_items(
    connection: sa.Connection,
    kind: AttentionKind,
    paged: _PagedKind,
    quiet: Mapping[str, Silence],
    shown: int,
    now: datetime,
) -> tuple[list[AttentionItem], int]:
    """The kind's oldest visible items (at least `shown` of them when it has that many) and
    how many of its items are visible in all."""
    prefix = f"{kind.value}:"
    silenced = [key.removeprefix(prefix) for key in quiet if key.startswith(prefix)]
    limit = shown + len(silenced)
    window = paged.read(connection, store.Window(limit=limit))
    items = list(window)
    count = len(window)
    if len(window) == limit:  # there may be more: count them, and find the silenced ones
        count = paged.count(connection)
        inside = {item.subject for item in window}
        beyond = [subject for subject in silenced if subject not in inside]
        if beyond:
            items += paged.read(connection, store.Window(only=beyond))
    hidden = sum(1 for item in items if _hidden(quiet.get(item.key), item, now))
    return [i for i in window if not _hidden(quiet.get(i.key), i, now)], count - hidden


def silence_item(
    engine: sa.Engine,
    settings: Settings,
    key: str,
    *,
    reason: str,
    by: str,
    now: datetime,
    snooze_for: timedelta | None = None,
) -> Silence:
    """Acknowledge (snooze_for None) or snooze one current item, audited with the reason."""
    if not reason.strip():
        raise AttentionError("a reason is required (--reason TEXT)")
    with engine.begin() as connection:
        items = {item.key: item for item in current_items(connection, settings, now)}
        item = items.get(key)
        if item is None:
            raise AttentionError(
                f"no attention item {key!r} now; `propready attention --all` lists them"
            )
        silence = Silence(
            item=key,
            mode="ack" if snooze_for is None else "snooze",
            reason=reason.strip(),
            by=by,
            at=now,
            until=None if snooze_for is None else now + snooze_for,
            version=item.version if snooze_for is None else None,
        )
        store.save_silence(connection, silence)
        detail: dict[str, object] = {"item": key, "reason": silence.reason, "by": by}
        if silence.until is not None:
            detail["until"] = silence.until.isoformat()
        audit.record(
            connection,
            AuditKind.ATTENTION_ACKNOWLEDGED if snooze_for is None else AuditKind.ATTENTION_SNOOZED,
            now,
            external_property_id=item.external_property_id,
            external_order_id=item.external_order_id,
            detail=detail,
        )
    return silence
