"""One readable line per audit event: what `propready explain` shows beside each row.

Pure functions over audit rows. Kinds this module does not know yet (other features add kinds)
get a generic `key=value` rendering of their detail, so nothing is ever hidden.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from propready.core.audit_kinds import AuditKind
from propready.core.pricing import usd

Detail = Mapping[str, Any]


def _services(services: Any) -> str:
    if not isinstance(services, list):
        return ""
    return ", ".join(
        f"{s.get('slug')} x{s.get('quantity')}" for s in services if isinstance(s, Mapping)
    )


def _usd(cents: Any) -> str:
    return usd(cents) if isinstance(cents, int) and not isinstance(cents, bool) else "unknown"


def _price(detail: Detail) -> str:
    if "estimated_price_cents" not in detail:
        return ""
    kind = "estimate" if detail.get("price_estimated") else "catalog price"
    unpriced = detail.get("unpriced_services")
    missing = f", no price for {', '.join(map(str, unpriced))}" if unpriced else ""
    return f" ({kind} {_usd(detail.get('estimated_price_cents'))}{missing})"


def _hold(detail: Detail) -> str:
    if detail.get("budget_outcome") != "hold":
        return ""
    if detail.get("held_by_budget"):
        return f"; HELD by budget {detail['held_by_budget']!r}: {detail.get('hold_reason')}"
    return f"; HELD: {detail.get('hold_reason')}"


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


def trace_lines(trace: Any) -> list[str]:
    """Each rule the decision looked at: its condition, result, and any values it read."""
    if not isinstance(trace, list):
        return []
    lines = []
    for step in trace:
        if not isinstance(step, Mapping):
            continue
        line = f"{step.get('rule_id')}: {step.get('condition')} -> {step.get('result')}"
        extra = {k: v for k, v in step.items() if k not in ("rule_id", "condition", "result")}
        if extra:
            line += " (" + ", ".join(f"{k}={_compact(v)}" for k, v in sorted(extra.items())) + ")"
        lines.append(line)
    return lines


def _decision(head: str, detail: Detail) -> str:
    parts = [head]
    if detail.get("reason"):
        parts.append(str(detail["reason"]))
    parts.extend(trace_lines(detail.get("trace")))
    return "; ".join(parts)


def _generic(detail: Detail) -> str:
    return ", ".join(f"{k}={_compact(v)}" for k, v in sorted(detail.items()) if k != "facts")


RENDERERS: dict[str, Callable[[Mapping[str, Any], Detail], str]] = {
    AuditKind.TRIGGER_FIRED: lambda r, d: (
        f"trigger {r.get('trigger_name')} fired ({d.get('kind')}, edge {d.get('edge_seq')})"
    ),
    AuditKind.RULE_MATCHED: lambda r, d: _decision(
        f"rule {r.get('rule_id')} matched: {_services(d.get('services'))}", d
    ),
    AuditKind.NO_RULE_MATCHED: lambda r, d: _decision("no rule matched", d),
    AuditKind.ORDER_NOT_PLANNABLE: lambda r, d: (
        "not plannable: " + "; ".join(str(p) for p in d.get("problems", []))
    ),
    AuditKind.DUPLICATE_BLOCKED: lambda r, d: (
        f"blocked by order {d.get('blocked_by')} (created {d.get('blocking_order_created_at')},"
        f" window {d.get('window_hours')} h)"
    ),
    AuditKind.ORDER_PLANNED_DRY_RUN: lambda r, d: (
        f"dry run: would order {r.get('external_order_id')}: {_services(d.get('services'))}"
    ),
    AuditKind.ORDER_CREATED: lambda r, d: (
        f"order {r.get('external_order_id')} created ({d.get('state')}) for"
        f" {d.get('billing_entity_slug')}: {_services(d.get('services'))}{_price(d)}{_hold(d)}"
    ),
    AuditKind.BUDGET_EXCEEDED: lambda r, d: (
        f"not ordered: skipped by budget {d.get('budget')!r}: {d.get('hold_reason')}{_price(d)}"
    ),
    AuditKind.ORDER_APPROVED: lambda r, d: (
        f"approved by {d.get('approved_by')}"
        + (f" (was held by budget {d.get('held_by_budget')!r})" if d.get("held_by_budget") else "")
        + (
            f"; OVER BUDGET: {d.get('hold_reason')}; reason: {d.get('over_budget_reason')}"
            if d.get("over_budget")
            else ""
        )
    ),
    AuditKind.ORDER_HELD: lambda r, d: f"held by {d.get('held_by')}: {d.get('hold_reason')}",
    AuditKind.ORDER_PRICE_REPORTED: lambda r, d: (
        f"PlanOmatic reports the price {_usd(d.get('vendor_price_cents'))}"
        f" (estimate was {_usd(d.get('estimated_price_cents'))})"
    ),
    AuditKind.ORDER_DELIVERED: lambda r, d: (
        f"delivered at {d.get('delivered_at')}: {d.get('photos')} photo(s), links "
        + (", ".join(str(link) for link in d.get("links") or []) or "none")
    ),
    AuditKind.ORDER_CANCELED_BY_VENDOR: lambda r, d: (
        f"canceled by PlanOmatic: {d.get('reason')} (on_vendor_cancel: {d.get('on_vendor_cancel')})"
    ),
    AuditKind.ORDER_UNABLE_TO_COMPLETE: lambda r, d: (
        f"PlanOmatic could not complete the appointment: {d.get('reason')}"
    ),
    AuditKind.ORDER_SENDING: lambda r, d: f"sending, attempt {d.get('attempt')}",
    AuditKind.ORDER_PLACED: lambda r, d: (
        f"placed: vendor order {d.get('vendor_order_id')} ({d.get('vendor_status')})"
    ),
    AuditKind.ORDER_REJECTED: lambda r, d: (
        f"rejected (HTTP {d.get('status')}): "
        + "; ".join(
            f"{e.get('attr')}: {e.get('message')}"
            for e in d.get("errors", [])
            if isinstance(e, Mapping)
        )
    ),
}


def summarise(row: Mapping[str, Any]) -> str:
    """A one-line account of one audit row."""
    detail = row.get("detail") or {}
    if not isinstance(detail, Mapping):
        return _compact(detail)
    renderer = RENDERERS.get(str(row.get("kind")))
    return renderer(row, detail) if renderer else _generic(detail)
