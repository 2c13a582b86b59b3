"""What waits for a person: the kinds of attention items, what each asks for, and when it is late.

One vocabulary serves the `propready attention` list (computed from current state), the
notification facts (computed from the audit log, `core.notify_facts`) and the silences
(acknowledge, snooze). A new kind is one `AttentionKind` member and one `KINDS` entry; the audit
kinds that announce it are one line each in `core.notify_facts.AUDIT_FACT_RULES`.

Pure: no I/O, no clock; callers pass `now`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal


class AttentionKind(StrEnum):
    APPROVAL = "approval"  # an order waits for `orders approve`
    BUDGET_HELD = "budget_held"  # a budget put an order on hold (awaiting approval, with a reason)
    UNKNOWN = "unknown"  # an order may or may not exist at PlanOmatic
    REJECTED = "rejected"  # PlanOmatic refused an order (400)
    NOT_PLANNABLE = "not_plannable"  # a ready home could not be turned into an order
    QUARANTINED = "quarantined"  # a PM row could not be typed or failed a sanity check
    API_KEY_REFUSED = "api_key_refused"  # PlanOmatic refused the API key: sending is paused
    SOURCE_FAILING = "source_failing"  # the PM database cannot be read
    STUCK = "stuck"  # a placed order without vendor progress for `stuck_after_hours`
    VENDOR_CANCELED = "vendor_canceled"  # PlanOmatic canceled an order or could not complete it
    WRITEBACK_FAILED = "writeback_failed"  # writing an order's outcome back to the PM failed


# What a fact or item is about: an order, a home (or PM row), or the one API key or source.
Subject = Literal["order", "home", "api_key", "source"]
Severity = Literal["warning", "failure"]


@dataclass(frozen=True, slots=True)
class KindInfo:
    """How one kind reads to people and when an item of it counts as overdue."""

    subject: Subject
    one: str  # "order waits for approval": after "1 "
    many: str  # "orders wait for approval": after "N "
    action: str  # what a person does about it
    command: str  # the command that does it; {order} and {home} are filled in
    overdue_hours: float  # default age after which `propready attention` exits 1
    severity: Severity = "warning"
    # While one of these kinds is active, facts of this kind are its consequences (a refused key
    # makes every send fail): they are recorded as suppressed instead of told one by one.
    inhibited_by: tuple[AttentionKind, ...] = ()


_KEY_OR_SOURCE = (AttentionKind.API_KEY_REFUSED, AttentionKind.SOURCE_FAILING)

KINDS: Mapping[AttentionKind, KindInfo] = {
    AttentionKind.APPROVAL: KindInfo(
        "order",
        "order waits for approval",
        "orders wait for approval",
        "approve it (or cancel it)",
        "propready orders approve {order}",
        24,
    ),
    AttentionKind.BUDGET_HELD: KindInfo(
        "order",
        "order is held by a budget",
        "orders are held by a budget",
        "approve it over budget, or cancel it",
        "propready orders approve {order}",
        24,
    ),
    AttentionKind.UNKNOWN: KindInfo(
        "order",
        "order may or may not exist at PlanOmatic (unknown)",
        "orders may or may not exist at PlanOmatic (unknown)",
        "look it up in PlanOmatic's portal, then resolve it",
        "propready orders resolve {order} --vendor-order-id N | --not-placed",
        4,
        "failure",
        (AttentionKind.API_KEY_REFUSED,),
    ),
    AttentionKind.REJECTED: KindInfo(
        "order",
        "order was rejected by PlanOmatic",
        "orders were rejected by PlanOmatic",
        "read the vendor's reason (propready audit --property {home}), fix it, order again",
        "propready reorder {home} --reason TEXT",
        24,
        "warning",
        (AttentionKind.API_KEY_REFUSED,),
    ),
    AttentionKind.NOT_PLANNABLE: KindInfo(
        "home",
        "ready home could not be ordered",
        "ready homes could not be ordered",
        "fix what the reason names (PM row, rule or config), then order again",
        "propready reorder {home} --reason TEXT",
        24,
        "warning",
        _KEY_OR_SOURCE,
    ),
    AttentionKind.QUARANTINED: KindInfo(
        "home",
        "PM row quarantined",
        "PM rows quarantined",
        "fix the row in the PM system; the next poll releases it",
        "propready audit --property {home} --kind source_row_quarantined",
        72,
        "warning",
        (AttentionKind.SOURCE_FAILING,),
    ),
    AttentionKind.API_KEY_REFUSED: KindInfo(
        "api_key",
        "PlanOmatic refused the API key: sending is paused",
        "PlanOmatic refused the API key: sending is paused",
        "install a valid key (credential planomatic__api_key) and restart; check tests it",
        "propready check",
        0,
        "failure",
    ),
    AttentionKind.SOURCE_FAILING: KindInfo(
        "source",
        "PM database cannot be read",
        "PM database cannot be read",
        "restore the connection or the query; polls resume by themselves",
        "propready check",
        1,
        "failure",
    ),
    AttentionKind.STUCK: KindInfo(
        "order",
        "order has no progress at PlanOmatic",
        "orders have no progress at PlanOmatic",
        "ask PlanOmatic about the order; sync fetches its status",
        "propready orders sync --all",
        0,
    ),
    AttentionKind.VENDOR_CANCELED: KindInfo(
        "order",
        "order was canceled by PlanOmatic or could not be completed",
        "orders were canceled by PlanOmatic or could not be completed",
        "decide whether the home is ordered again",
        "propready reorder {home} --reason TEXT",
        24,
    ),
    AttentionKind.WRITEBACK_FAILED: KindInfo(
        "order",
        "write-back to the PM failed",
        "write-backs to the PM failed",
        "fix the write-back target, then retry it",
        "propready writeback retry {order} --reason TEXT",
        24,
    ),
}


def command_for(kind: AttentionKind, order: str | None, home: str | None) -> str:
    """The kind's command with this item's order and home filled in."""
    return KINDS[kind].command.format(order=order or "ID", home=home or "PROPERTY_ID")


def item_key(kind: AttentionKind, subject: str) -> str:
    """The name people use for an item (`propready attention ack KEY`): `kind:subject`."""
    return f"{kind.value}:{subject}"


def inhibitor(kind: AttentionKind, active: frozenset[AttentionKind]) -> AttentionKind | None:
    """The active kind that suppresses facts of `kind`, if any (first in the kind's own order)."""
    for candidate in KINDS[kind].inhibited_by:
        if candidate in active:
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class AttentionItem:
    """One thing waiting for a person, computed from current state."""

    kind: AttentionKind
    subject: str  # the order's external id, the home's id, "api_key" or "source"
    since: datetime  # when it started waiting
    what: str  # one line, from an allow-list of fields; no secrets
    version: str  # changes when the item changes: an acknowledgement lasts until then
    external_property_id: str | None = None
    external_order_id: str | None = None

    @property
    def key(self) -> str:
        return item_key(self.kind, self.subject)

    @property
    def action(self) -> str:
        return KINDS[self.kind].action.format(
            order=self.external_order_id or "ID", home=self.external_property_id or "PROPERTY_ID"
        )

    @property
    def command(self) -> str:
        return command_for(self.kind, self.external_order_id, self.external_property_id)

    def age(self, now: datetime) -> timedelta:
        return max(timedelta(0), now - self.since)


@dataclass(frozen=True, slots=True)
class Silence:
    """An acknowledgement (until the item changes) or a snooze (until a time) of one item."""

    item: str
    mode: Literal["ack", "snooze"]
    reason: str
    by: str
    at: datetime
    until: datetime | None = None  # snooze end
    version: str | None = None  # the item's version when it was acknowledged

    def hides(self, item: AttentionItem, now: datetime) -> bool:
        if self.mode == "snooze":
            return self.until is not None and now < self.until
        return self.version == item.version


def overdue_after(kind: AttentionKind, overrides: Mapping[str, float]) -> timedelta:
    """How old an item of `kind` may get before `propready attention` exits 1."""
    hours = overrides.get(kind.value, KINDS[kind].overdue_hours)
    return timedelta(hours=hours)


def is_overdue(item: AttentionItem, now: datetime, overrides: Mapping[str, float]) -> bool:
    return item.age(now) >= overdue_after(item.kind, overrides)


def oldest_first(items: list[AttentionItem]) -> list[AttentionItem]:
    return sorted(items, key=lambda item: (item.since, item.kind.value, item.subject))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.IGNORECASE)
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """ "4h", "30m", "2d", "1h30m" -> a timedelta; ValueError for anything else or zero."""
    compact = text.strip().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise ValueError(f"{text!r} is not a duration such as 30m, 4h, 2d or 1h30m")
    seconds = sum(
        float(number) * _UNIT_SECONDS[unit.lower()] for number, unit in _DURATION.findall(compact)
    )
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


def format_age(age: timedelta) -> str:
    """A short age for people: "45s", "12m", "3h 5m", "2d 4h"."""
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
