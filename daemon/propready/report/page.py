"""The audit report: figures from the analyst views, four charts, one self-contained HTML file.

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


@dataclass
class ReportData:
    """What the report shows, already aggregated."""

    since: datetime
    until: datetime
    weekly_orders: dict[str, dict[str, int]] = field(default_factory=dict)  # week -> series -> n
    outcomes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    rejections: list[tuple[str, int]] = field(default_factory=list)
    unknown_now: int = 0


def week_of(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def collect(connection: sa.Connection, since: datetime, until: datetime) -> ReportData:
    """Read the analyst views for [since, until) and aggregate them for the charts."""
    data = ReportData(since, until)
    weekly: dict[str, Counter[str]] = defaultdict(Counter)
    for row in read_view(connection, "audit_orders_by_day", since=since, until=until):
        series = f"{row['billing_entity_slug']} / {row['service_slug']}"
        weekly[week_of(row["day"])][series] += int(row["orders"])
    data.weekly_orders = {week: dict(counts) for week, counts in sorted(weekly.items())}
    outcomes: Counter[str] = Counter()
    for row in read_view(connection, "audit_decisions_by_rule", since=since, until=until):
        outcomes[str(row["outcome"])] += int(row["decisions"])
    data.outcomes = dict(outcomes.most_common())
    data.latencies = [
        float(row["seconds_to_placed"])
        for row in read_view(connection, "audit_readiness_to_order", since=since, until=until)
    ]
    reasons: Counter[str] = Counter()
    for row in read_view(connection, "audit_rejections", since=since, until=until):
        reason = f"{row['field']}: {row['message']}" if row["field"] else "(no field named)"
        reasons[reason] += 1
    data.rejections = reasons.most_common(10)
    data.unknown_now = len(read_view(connection, "audit_orders_unknown"))
    return data


def latency_histogram(latencies: Sequence[float]) -> dict[str, int]:
    counts = {label: 0 for _, label in LATENCY_BUCKETS}
    for seconds in latencies:
        label = next(label for bound, label in LATENCY_BUCKETS if seconds < bound)
        counts[label] += 1
    return counts


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def render(data: ReportData, generated_at: datetime) -> str:
    """The whole page: inline CSS and SVG, no script, no external resource."""
    weeks = list(data.weekly_orders)
    names = sorted({name for counts in data.weekly_orders.values() for name in counts})
    histogram = latency_histogram(data.latencies)
    median = _duration(statistics.median(data.latencies)) if data.latencies else "-"
    figures = [
        ("Orders placed", str(sum(sum(c.values()) for c in data.weekly_orders.values()))),
        ("Readiness events decided", str(sum(data.outcomes.values()))),
        ("Duplicates blocked", str(data.outcomes.get("duplicate_blocked", 0))),
        ("Median readiness to placed order", median),
        ("Orders unknown now", str(data.unknown_now)),
    ]
    charts = [
        bar_chart(
            "Orders placed per week, by billing entity / service",
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
    period = f"{data.since:%Y-%m-%d %H:%M} to {data.until:%Y-%m-%d %H:%M} UTC"
    sections = "".join(f'<section class="chart">{svg}</section>' for svg in charts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        "<title>propready audit report</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse}th,td{padding:4px 12px;text-align:left;"
        "border-bottom:1px solid #ddd}section.chart{margin:2em 0}</style></head><body>"
        "<h1>propready audit report</h1>"
        f'<p class="period">{escape(period)}; generated {generated_at:%Y-%m-%d %H:%M} UTC from'
        " the audit log's analyst views.</p>"
        f'<table class="figures">{figure_rows}</table>{sections}</body></html>\n'
    )
