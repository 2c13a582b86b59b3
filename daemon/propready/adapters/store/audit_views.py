"""Reading the analyst views (migration 0003) with typed columns, for the CLI and the report.

The views themselves are the interface for analysts (deploy/RUNBOOK.md); these functions read
them the same way, so the report shows what an analyst's own query would show.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import UtcDateTime

# The analyst views and their timestamp columns (SQLite returns those as text; typed here).
VIEW_TIMESTAMPS: dict[str, tuple[str, ...]] = {
    "audit_order_lines": ("placed_at",),
    "audit_orders_by_day": (),
    "audit_decisions": ("fired_at",),
    "audit_decisions_by_rule": (),
    "audit_duplicates_blocked": ("blocked_at",),
    "audit_rejections": ("rejected_at",),
    "audit_rejections_by_field": ("first_at", "last_at"),
    "audit_readiness_to_order": ("fired_at", "created_at", "placed_at"),
    "audit_orders_unknown": ("created_at", "unknown_since"),
    "audit_order_spend": ("created_at", "placed_at"),
    "audit_spend_by_entity_month": (),
    "audit_deliveries": ("ready_at", "created_at", "placed_at", "delivered_at"),
}
# The column each view can be limited by in time.
VIEW_TIME_COLUMN = {
    "audit_order_lines": "placed_at",
    "audit_orders_by_day": "day",
    "audit_decisions": "fired_at",
    "audit_decisions_by_rule": "day",
    "audit_duplicates_blocked": "blocked_at",
    "audit_rejections": "rejected_at",
    "audit_readiness_to_order": "placed_at",
    "audit_order_spend": "placed_at",
    "audit_deliveries": "placed_at",
}


def _plain(value: Any) -> Any:
    # One shape on both databases: dates as date, numbers as int or float.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-":
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return value


def _day_bound(value: datetime, bound: str) -> date:
    """The UTC days that overlap [since, until): a day is in when any moment of it is.

    `until` is usually now: today's rows so far are in (day < tomorrow), unless `until` is
    exactly midnight.
    """
    day = value.astimezone(UTC).date()
    if bound == "until" and value.astimezone(UTC).time() != time(0):
        return day + timedelta(days=1)
    return day


def read_view(
    connection: sa.Connection,
    view: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    order_by: str | None = None,
) -> list[dict[str, Any]]:
    """Every row of one analyst view, optionally limited to [since, until) on its time column."""
    if view not in VIEW_TIMESTAMPS:
        raise ValueError(f"unknown audit view {view!r}")
    typed = {name: UtcDateTime() for name in VIEW_TIMESTAMPS[view]}
    where: list[str] = []
    params: dict[str, Any] = {}
    time_column = VIEW_TIME_COLUMN.get(view)
    for bound, op, value in (("since", ">=", since), ("until", "<", until)):
        if value is None or time_column is None:
            continue
        where.append(f"{time_column} {op} :{bound}")
        # A day column compares with a date; a timestamp column with a UTC timestamp.
        params[bound] = _day_bound(value, bound) if time_column == "day" else value
    sql = f"SELECT * FROM {view}"  # view and column names come from the constants above
    if where:
        sql += " WHERE " + " AND ".join(where)
    if order_by:
        sql += f" ORDER BY {order_by}"
    bound_type: sa.types.TypeEngine[Any] = sa.Date() if time_column == "day" else UtcDateTime()
    statement = sa.text(sql).bindparams(*(sa.bindparam(name, type_=bound_type) for name in params))
    if typed:
        statement = statement.columns(**typed)  # type: ignore[assignment]
    rows = connection.execute(statement, params).mappings()
    return [{key: _plain(value) for key, value in row.items()} for row in rows]
