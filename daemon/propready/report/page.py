"""The audit report: figures from the analyst views, four charts, spend tables, one HTML file.

`collect` reads the views (the same ones analysts query); `summarise_report` and `render` are
pure, so tests can check the numbers and the page separately.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from html import escape

import sqlalchemy as sa

from propready.adapters.store.audit_views import read_view
from propready.core.pricing import usd
from propready.report.svg import bar_chart

# Readiness-to-order latency buckets: (upper bound in seconds, label).
LATENCY_BUCKETS = (
    (60.0, "< 1 min"),
    (300.0, "1-5 min"),
    (900.0, "5-15 min"),
    (3600.0, "15-60 min"),
    (4 * 3600.0, "1-4 h"),
    (86400.0, "4-24 h"),
    (float("inf"), "> 1 day"),
)


@dataclass(frozen=True)
class SpendLine:
    """Placed orders and their spend for one billing entity and month (source time zone)."""

    billing_entity_slug: str
    month: str
    orders: int
    spend_cents: int
    estimated: bool  # some figure is an estimate or unknown, not the vendor's price


@dataclass(frozen=True)
class HomeLine:
    """One placed order in the per-home list."""

    placed_at: datetime
    external_property_id: str
    billing_entity_slug: str
    external_order_id: str
    month: str
    spend_cents: int
    price_source: str  # vendor | catalog | estimate | unknown


@dataclass
class ReportData:
    """What the report shows, already aggregated.

    Every order figure counts placed orders that were not canceled, placed in [since, until)
    (today included when `until` is now): one order is one order, whatever its services.
    """

    since: datetime
    until: datetime
    orders_placed: int = 0
    spend_cents: int = 0
    weekly_orders: dict[str, dict[str, int]] = field(default_factory=dict)  # week -> entity -> n
    spend_by_entity_month: list[SpendLine] = field(default_factory=list)
    homes: list[HomeLine] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    rejections: list[tuple[str, int]] = field(default_factory=list)
    unknown_now: int = 0


def week_of(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def collect(connection: sa.Connection, since: datetime, until: datetime) -> ReportData:
    """Read the analyst views for [since, until) and aggregate them for the page."""
    data = ReportData(since, until)
    placed = read_view(
        connection, "audit_order_spend", since=since, until=until, order_by="placed_at, order_id"
    )
    data.homes = [
        HomeLine(
            row["placed_at"],
            str(row["external_property_id"]),
            str(row["billing_entity_slug"]),
            str(row["external_order_id"]),
            str(row["month"]),
            int(row["spend_cents"]),
            str(row["price_source"]),
        )
        for row in placed
    ]
    data.orders_placed = len(data.homes)
    data.spend_cents = sum(home.spend_cents for home in data.homes)
    weekly: dict[str, Counter[str]] = defaultdict(Counter)
    for home in data.homes:
        weekly[week_of(home.placed_at.date())][home.billing_entity_slug] += 1
    data.weekly_orders = {week: dict(counts) for week, counts in sorted(weekly.items())}
    data.spend_by_entity_month = spend_lines(data.homes)
    outcomes: Counter[str] = Counter(
        str(row["outcome"])
        for row in read_view(connection, "audit_decisions", since=since, until=until)
    )
    data.outcomes = dict(outcomes.most_common())
    counted = {row["order_id"] for row in placed}
    data.latencies = [
        float(row["seconds_to_placed"])
        for row in read_view(connection, "audit_readiness_to_order", since=since, until=until)
        if row["order_id"] in counted
    ]
    reasons: Counter[str] = Counter()
    for row in read_view(connection, "audit_rejections", since=since, until=until):
        reason = f"{row['field']}: {row['message']}" if row["field"] else "(no field named)"
        reasons[reason] += 1
    data.rejections = reasons.most_common(10)
    data.unknown_now = len(read_view(connection, "audit_orders_unknown"))
    return data


def spend_lines(homes: Sequence[HomeLine]) -> list[SpendLine]:
    """Orders and spend per billing entity and month, as audit_spend_by_entity_month sums them."""
    groups: dict[tuple[str, str], list[HomeLine]] = defaultdict(list)
    for home in homes:
        groups[(home.billing_entity_slug, home.month)].append(home)
    return [
        SpendLine(
            entity,
            month,
            len(group),
            sum(h.spend_cents for h in group),
            any(h.price_source in ("estimate", "unknown") for h in group),
        )
        for (entity, month), group in sorted(groups.items())
    ]


def latency_histogram(latencies: Sequence[float]) -> dict[str, int]:
    counts = {label: 0 for _, label in LATENCY_BUCKETS}
    for seconds in latencies:
        label = next(label for bound, label in LATENCY_BUCKETS if seconds < bound)
        counts[label] += 1
    return counts


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def _money(cents: int, estimated: bool) -> str:
    return usd(cents) + (" (est.)" if estimated else "")


def render(data: ReportData, generated_at: datetime) -> str:
    """The whole page: inline CSS and SVG, no script, no external resource."""
    weeks = list(data.weekly_orders)
    names = sorted({name for counts in data.weekly_orders.values() for name in counts})
    histogram = latency_histogram(data.latencies)
    median = _duration(statistics.median(data.latencies)) if data.latencies else "-"
    estimated = any(line.estimated for line in data.spend_by_entity_month)
    figures = [
        ("Orders placed", str(data.orders_placed)),
        ("Spend", _money(data.spend_cents, estimated)),
        ("Readiness events decided", str(sum(data.outcomes.values()))),
        ("Duplicates blocked", str(data.outcomes.get("duplicate_blocked", 0))),
        ("Median readiness to placed order", median),
        ("Orders unknown now", str(data.unknown_now)),
    ]
    charts = [
        bar_chart(
            "Orders placed per week, by billing entity",
            weeks,
            {n: [data.weekly_orders[w].get(n, 0) for w in weeks] for n in names},
        ),
        bar_chart(
            "Readiness events by decision outcome",
            list(data.outcomes),
            {"decisions": list(data.outcomes.values())},
        ),
        bar_chart(
            "Time from readiness (trigger fired) to placed order",
            list(histogram),
            {"orders": list(histogram.values())},
        ),
        bar_chart(
            "Top rejection reasons (field: vendor message)",
            [reason for reason, _ in data.rejections],
            {"rejections": [n for _, n in data.rejections]},
        ),
    ]
    figure_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in figures)
    spend_rows = [
        (
            line.billing_entity_slug,
            line.month,
            str(line.orders),
            _money(line.spend_cents, line.estimated),
        )
        for line in data.spend_by_entity_month
    ]
    home_rows = [
        (
            f"{home.placed_at:%Y-%m-%d %H:%M}",
            home.external_property_id,
            home.billing_entity_slug,
            home.external_order_id,
            usd(home.spend_cents),
            home.price_source,
        )
        for home in data.homes
    ]
    period = f"{data.since:%Y-%m-%d %H:%M} to {data.until:%Y-%m-%d %H:%M} UTC"
    sections = "".join(f'<section class="chart">{svg}</section>' for svg in charts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        "<title>propready audit report</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{padding:4px 12px;text-align:left;"
        "border-bottom:1px solid #ddd}section.chart{margin:2em 0}</style></head><body>"
        "<h1>propready audit report</h1>"
        f'<p class="period">{escape(period)}; generated {generated_at:%Y-%m-%d %H:%M} UTC from'
        " the audit log's analyst views. Orders are placed orders, canceled ones left out;"
        " spend is the vendor's price where PlanOmatic reported one, else the catalog's"
        " estimate (est.: example prices or a service without a price).</p>"
        f'<table class="figures">{figure_rows}</table>{sections}'
        "<h2>Spend per billing entity and month</h2>"
        + _table("spend", ("Billing entity", "Month", "Orders", "Spend"), spend_rows)
        + "<h2>Orders placed, per home</h2>"
        + _table(
            "homes",
            ("Placed (UTC)", "Home", "Billing entity", "Order", "Price", "Price from"),
            home_rows,
        )
        + "</body></html>\n"
    )


def _table(name: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return f'<p class="{name}">No orders placed in this period.</p>'
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f'<table class="{name}"><tr>{header}</tr>{body}</table>'
