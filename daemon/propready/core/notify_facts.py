"""Notification facts: which audit rows announce something a person must hear about.

A fact is one (kind, subject, occurrence) (design 8.5): one order entering `unknown`, one
quarantine of one row version, one refusal of the key. Facts that are events come from audit
rows through `AUDIT_FACT_RULES`, one line per audit kind (first match wins); facts that are
states (an order stuck at the vendor, a source failing for a while) come from periodic checks
(`stuck_fact`, `source_failing_fact`). The notification store keeps each fact once.

Only allow-listed detail fields become the fact's reason text, and the caller's `scrub` (the log
redactor) masks known secret values in it: a fact never carries the payload, facts of the home
or anything else an audit detail may hold.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from propready.core.attention import KINDS, AttentionKind
from propready.core.audit_kinds import AuditKind

MAX_REASON_CHARS = 300
PRESENT = object()  # in `FactRule.when`: the detail key is set (to anything but null)
Scrub = Callable[[str], str]  # masks known secret values in a text (the log redactor)


@dataclass(frozen=True, slots=True)
class FactRule:
    """Audit rows of `audit_kind` whose detail matches `when` are facts of `kind`."""

    audit_kind: AuditKind
    kind: AttentionKind
    when: Mapping[str, object] = field(default_factory=dict)

    def matches(self, audit_kind: str, detail: Mapping[str, Any]) -> bool:
        if audit_kind != self.audit_kind.value:
            return False
        for key, wanted in self.when.items():
            value = detail.get(key)
            if wanted is PRESENT:
                if value is None:
                    return False
            elif value != wanted:
                return False
        return True


# The one table from audit kinds to notification kinds. Lifecycle, pre-flight and budgets write
# some of these kinds; nothing here needs to change when they land.
A, K = AttentionKind, AuditKind  # short names keep the table one line per rule
AUDIT_FACT_RULES: tuple[FactRule, ...] = (
    FactRule(K.ORDER_CREATED, A.BUDGET_HELD, {"held_by": PRESENT}),
    FactRule(K.ORDER_CREATED, A.APPROVAL, {"state": "awaiting_approval"}),
    FactRule(K.ORDER_OUTCOME_UNKNOWN, A.UNKNOWN),
    FactRule(K.ORDER_OUTCOME_AFTER_LEASE_LOST, A.UNKNOWN, {"outcome": "order_outcome_unknown"}),
    FactRule(K.ORDER_REJECTED, A.REJECTED),
    FactRule(K.ORDER_NOT_PLANNABLE, A.NOT_PLANNABLE),
    FactRule(K.SOURCE_ROW_QUARANTINED, A.QUARANTINED),
    FactRule(K.SENDING_PAUSED, A.API_KEY_REFUSED, {"reason": "api_key_refused"}),
    FactRule(K.ORDER_CANCELED_BY_VENDOR, A.VENDOR_CANCELED),
    FactRule(K.ORDER_UNABLE_TO_COMPLETE, A.VENDOR_CANCELED),
    FactRule(K.WRITEBACK_FAILED, A.WRITEBACK_FAILED),
)
WATCHED_AUDIT_KINDS: tuple[str, ...] = tuple(
    dict.fromkeys(rule.audit_kind.value for rule in AUDIT_FACT_RULES)
)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """The columns of an audit row a fact may be made of."""

    id: int
    at: datetime
    kind: str
    detail: Mapping[str, Any]
    external_property_id: str | None = None
    external_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Fact:
    kind: AttentionKind
    subject: str
    occurrence: str
    happened_at: datetime
    external_property_id: str | None = None
    external_order_id: str | None = None
    reason: str | None = None


def kind_of(row: AuditRow) -> AttentionKind | None:
    for rule in AUDIT_FACT_RULES:
        if rule.matches(row.kind, row.detail):
            return rule.kind
    return None


def fact_from_audit(row: AuditRow, scrub: Scrub) -> Fact | None:
    """The fact an audit row announces, or None when it announces nothing for people."""
    kind = kind_of(row)
    if kind is None:
        return None
    subject = _subject(kind, row.external_property_id, row.external_order_id)
    return Fact(
        kind=kind,
        subject=subject,
        occurrence=f"audit:{row.id}",
        happened_at=row.at,
        external_property_id=row.external_property_id,
        external_order_id=row.external_order_id,
        reason=reason_text(row.detail, scrub),
    )


def _subject(kind: AttentionKind, home: str | None, order: str | None) -> str:
    what = KINDS[kind].subject
    if what == "order":
        return order or home or "?"
    if what == "home":
        return home or "(row without a property id)"
    return what


def stuck_fact(
    external_order_id: str,
    external_property_id: str,
    last_progress: datetime,
    vendor_status: str | None,
    became_stuck_at: datetime,
) -> Fact:
    """One stuck episode of one order: a later status change and a new silence make another."""
    return Fact(
        kind=AttentionKind.STUCK,
        subject=external_order_id,
        occurrence=f"since:{last_progress.isoformat()}",
        happened_at=became_stuck_at,
        external_property_id=external_property_id,
        external_order_id=external_order_id,
        reason=f"PlanOmatic status {vendor_status or 'not known yet'} since "
        f"{last_progress:%Y-%m-%d %H:%M}Z",
    )


def source_failing_fact(
    last_success: datetime | None, failures: int, error: str | None, now: datetime, scrub: Scrub
) -> Fact:
    """One outage of the PM database (the one after its last successful poll)."""
    after = last_success.isoformat() if last_success is not None else "never"
    return Fact(
        kind=AttentionKind.SOURCE_FAILING,
        subject="source",
        occurrence=f"after:{after}",
        happened_at=now,
        reason=_clip(scrub(f"{failures} polls failed in a row; last error: {error or '?'}")),
    )


def reason_text(detail: Mapping[str, Any], scrub: Scrub) -> str | None:
    """A one-line reason from allow-listed detail fields only, scrubbed and clipped."""
    parts: list[str] = []
    column, reason = detail.get("column"), detail.get("reason")
    if isinstance(column, str) and isinstance(reason, str):
        parts.append(f"column {column}: {reason}")
    elif isinstance(reason, str):
        parts.append(reason)
    problems = detail.get("problems")
    if isinstance(problems, list):
        parts.extend(str(problem) for problem in problems if isinstance(problem, str | int))
    errors = detail.get("errors")
    if isinstance(errors, list):
        for error in errors:
            if isinstance(error, Mapping):
                parts.append(f"{error.get('attr')}: {error.get('message')}")
    status = detail.get("status")
    if isinstance(status, int) and not isinstance(status, bool):
        parts.insert(0, f"HTTP {status}")
    held_by = detail.get("held_by")
    if isinstance(held_by, str):
        parts.append(f"held by {held_by}")
    if not parts:
        return None
    return _clip(scrub("; ".join(" ".join(part.split()) for part in parts)))


def _clip(text: str) -> str:
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 1] + "…"
