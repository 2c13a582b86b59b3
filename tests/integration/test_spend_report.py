"""The report and the spend views against a hand-computed history, on SQLite and PostgreSQL.

The history (source time zone America/Denver, report from 2026-10-01 until "now", 2026-12-02
18:00 UTC):

| order | home | entity   | created (UTC)    | placed (UTC)     | local month | price (cents)          | end state |
|-------|------|----------|------------------|------------------|-------------|------------------------|-----------|
| O1    | H1   | entity_a | 2026-10-15 16:00 | 16:02 (120 s)    | 2026-10     | 30000 estimate         | placed    |
| O2    | H2   | entity_b | 2026-10-31 23:30 | 11-01 00:10 (2400 s) | 2026-10 (17:30 MDT) | 17500 est., vendor 16000 | placed |
| O3    | H3   | entity_a | 2026-11-10 15:00 | 15:00:30 (30 s)  | 2026-11     | 12500 firm             | placed    |
| O4    | H4   | entity_a | 2026-11-20 15:00 | 15:01            | 2026-11     | 30000                  | canceled  |
| O5    | H5   | entity_b | 2026-11-25 15:00 | never            | 2026-11     | 30000                  | rejected  |
| O6    | H6   | entity_b | 2026-12-02 16:00 | 16:05 (300 s), today | 2026-12 | 30000 estimate         | placed    |
| O7    | H7   | entity_a | 2026-12-02 17:00 | not yet          | 2026-12     | 30000                  | planned   |
| O8    | H8   | entity_a | 2026-12-01 15:00 | unknown          | 2026-12     | 30000                  | unknown   |

plus one readiness event no rule matched and one blocked as a duplicate. By hand: 4 orders
placed (O1, O2, O3, O6; canceled, rejected, unplaced and unknown ones left out), spend
30000 + 16000 + 12500 + 30000 = 88500 cents (some estimated), 10 readiness events decided, one
duplicate blocked, median latency of 30, 120, 300, 2400 s = 210 s, one rejection reason, one
order unknown now.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from propready.adapters.store import audit, outbox
from propready.adapters.store import budgets as budget_store
from propready.adapters.store.audit_views import read_view
from propready.adapters.store.engine import create_state_engine
from propready.core.audit_kinds import AuditKind
from propready.core.budgets import local_day
from propready.core.orders import OrderState
from propready.core.planning import OrderPlan
from propready.report.page import HomeLine, ReportData, SpendLine, collect
from tests.integration.audit_support import propready, write_config

DENVER = ZoneInfo("America/Denver")
SINCE = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Spec:
    number: int
    entity: str
    created: datetime
    placed_after: timedelta | None
    cents: int
    estimated: bool
    end: OrderState
    vendor_cents: int | None = None


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


HISTORY = [
    Spec(1, "entity_a", _utc(2026, 10, 15, 16), timedelta(seconds=120), 30000, True, OrderState.PLACED),
    Spec(2, "entity_b", _utc(2026, 10, 31, 23, 30), timedelta(minutes=40), 17500, True,
         OrderState.PLACED, vendor_cents=16000),
    Spec(3, "entity_a", _utc(2026, 11, 10, 15), timedelta(seconds=30), 12500, False, OrderState.PLACED),
    Spec(4, "entity_a", _utc(2026, 11, 20, 15), timedelta(minutes=1), 30000, True, OrderState.CANCELED),
    Spec(5, "entity_b", _utc(2026, 11, 25, 15), None, 30000, True, OrderState.REJECTED),
    Spec(6, "entity_b", _utc(2026, 12, 2, 16), timedelta(minutes=5), 30000, True, OrderState.PLACED),
    Spec(7, "entity_a", _utc(2026, 12, 2, 17), None, 30000, True, OrderState.PLANNED),
    Spec(8, "entity_a", _utc(2026, 12, 1, 15), None, 30000, True, OrderState.UNKNOWN),
]  # fmt: skip


def _record_history(engine: sa.Engine) -> None:
    for spec in HISTORY:
        home, external = f"H{spec.number}", f"pr-O{spec.number}"
        plan = OrderPlan(
            external, home, spec.entity, {"external_property_id": home}, 72, False,
            estimated_price_cents=spec.cents, price_estimated=spec.estimated,
        )  # fmt: skip
        refs = {"external_property_id": home, "event_id": spec.number, "rule_id": "r"}
        with engine.begin() as connection:
            audit.record(
                connection, AuditKind.TRIGGER_FIRED, spec.created, trigger_name="t", **refs
            )
            order_id = outbox.insert_order(
                connection, plan, event_id=None, rule_id="r", rules_version="v",
                state=OrderState.PLANNED, now=spec.created,
                budget_day=local_day(spec.created, DENVER),
            )  # fmt: skip
            created = {
                "billing_entity_slug": spec.entity,
                "services": [{"slug": "photos", "quantity": 15}],
            }
            audit.record(
                connection, AuditKind.ORDER_CREATED, spec.created, order_id=order_id,
                external_order_id=external, detail=created, **refs,
            )  # fmt: skip
            placed_at = spec.created + spec.placed_after if spec.placed_after else None
            if placed_at is not None:
                outbox.set_outcome(connection, order_id, OrderState.PLACED, placed_at)
                audit.record(
                    connection, AuditKind.ORDER_PLACED, placed_at, order_id=order_id,
                    external_order_id=external, **refs,
                )  # fmt: skip
            later = spec.created + timedelta(hours=1)
            if spec.end is OrderState.CANCELED:
                outbox.set_outcome(connection, order_id, OrderState.CANCELED, later)
                audit.record(connection, AuditKind.ORDER_CANCELED, later, order_id=order_id, **refs)
            elif spec.end is OrderState.REJECTED:
                outbox.set_outcome(connection, order_id, OrderState.REJECTED, later)
                errors = [{"attr": "postal_code", "message": "unrecognized"}]
                audit.record(
                    connection, AuditKind.ORDER_REJECTED, later, order_id=order_id,
                    detail={"status": "validation-error", "errors": errors}, **refs,
                )  # fmt: skip
            elif spec.end is OrderState.UNKNOWN:
                outbox.set_outcome(connection, order_id, OrderState.UNKNOWN, later)
            if spec.vendor_cents is not None:
                budget_store.record_vendor_price(connection, order_id, spec.vendor_cents, later)
    with engine.begin() as connection:
        for event, kind in ((20, AuditKind.NO_RULE_MATCHED), (21, AuditKind.DUPLICATE_BLOCKED)):
            at = _utc(2026, 11, 5, 12)
            audit.record(connection, AuditKind.TRIGGER_FIRED, at, event_id=event, trigger_name="t")
            audit.record(connection, kind, at, event_id=event)


@pytest.fixture
def history(state_url: str) -> Iterator[sa.Engine]:
    engine = create_state_engine(state_url)
    _record_history(engine)
    yield engine
    engine.dispose()


EXPECTED = ReportData(
    since=SINCE,
    until=NOW,
    orders_placed=4,
    spend_cents=88500,
    weekly_orders={
        "2026-W42": {"entity_a": 1},
        "2026-W44": {"entity_b": 1},  # placed 2026-11-01 00:10 UTC, a Sunday
        "2026-W46": {"entity_a": 1},
        "2026-W49": {"entity_b": 1},  # today
    },
    spend_by_entity_month=[
        SpendLine("entity_a", "2026-10", 1, 30000, True),
        SpendLine("entity_a", "2026-11", 1, 12500, False),
        SpendLine("entity_b", "2026-10", 1, 16000, False),  # the vendor's price, its local month
        SpendLine("entity_b", "2026-12", 1, 30000, True),
    ],
    homes=[
        HomeLine(_utc(2026, 10, 15, 16, 2), "H1", "entity_a", "pr-O1", "2026-10", 30000, "estimate"),
        HomeLine(_utc(2026, 11, 1, 0, 10), "H2", "entity_b", "pr-O2", "2026-10", 16000, "vendor"),
        HomeLine(_utc(2026, 11, 10, 15, 0, 30), "H3", "entity_a", "pr-O3", "2026-11", 12500, "catalog"),
        HomeLine(_utc(2026, 12, 2, 16, 5), "H6", "entity_b", "pr-O6", "2026-12", 30000, "estimate"),
    ],
    outcomes={"order_created": 8, "no_rule_matched": 1, "duplicate_blocked": 1},
    latencies=[120.0, 2400.0, 30.0, 300.0],
    rejections=[("postal_code: unrecognized", 1)],
    unknown_now=1,
)  # fmt: skip


def test_every_figure_of_the_report_matches_the_hand_computed_history(history: sa.Engine) -> None:
    """Orders (not lines), no canceled ones, today included, spend per entity and month, homes."""
    with history.connect() as connection:
        data = collect(connection, SINCE, NOW)
    data.latencies = sorted(data.latencies)
    assert data == ReportData(**{**EXPECTED.__dict__, "latencies": [30.0, 120.0, 300.0, 2400.0]})


def test_spend_view_per_entity_and_month(history: sa.Engine) -> None:
    """audit_spend_by_entity_month has exactly its four columns and the figures by hand."""
    with history.connect() as connection:
        rows = read_view(
            connection, "audit_spend_by_entity_month", order_by="billing_entity_slug, month"
        )
    assert rows == [
        {"billing_entity_slug": "entity_a", "month": "2026-10", "orders": 1, "spend_cents": 30000},
        {"billing_entity_slug": "entity_a", "month": "2026-11", "orders": 1, "spend_cents": 12500},
        {"billing_entity_slug": "entity_b", "month": "2026-10", "orders": 1, "spend_cents": 16000},
        {"billing_entity_slug": "entity_b", "month": "2026-12", "orders": 1, "spend_cents": 30000},
    ]


def test_orders_by_day_leaves_out_canceled_orders_and_includes_today(history: sa.Engine) -> None:
    """The canceled O4 is not counted; a view read until now still has today's row."""
    with history.connect() as connection:
        rows = read_view(connection, "audit_orders_by_day", since=SINCE, until=NOW, order_by="day")
    assert [(str(r["day"]), r["billing_entity_slug"], r["orders"]) for r in rows] == [
        ("2026-10-15", "entity_a", 1),
        ("2026-11-01", "entity_b", 1),
        ("2026-11-10", "entity_a", 1),
        ("2026-12-02", "entity_b", 1),
    ]


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.cells.append(data.strip())


def test_the_report_command_prints_the_same_figures(
    history: sa.Engine, state_url: str, tmp_path: Path
) -> None:
    """`propready report` writes the headline, the spend table and the home list by hand."""
    out = tmp_path / "report.html"
    result = propready(
        write_config(tmp_path, state_url),
        "report", "--since", "2026-10-01", "--until", "2026-12-02T18:00:00", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = _Text()
    page.feed(out.read_text())
    text = "|".join(page.cells)
    assert (
        "Orders placed|4|Spend|$885.00 (est.)|Readiness events decided|10|Duplicates blocked|1|"
        "Median readiness to placed order|0:03:30|Orders unknown now|1|"
    ) in text
    assert (
        "entity_a|2026-10|1|$300.00 (est.)|entity_a|2026-11|1|$125.00|"
        "entity_b|2026-10|1|$160.00|entity_b|2026-12|1|$300.00 (est.)|"
    ) in text
    assert (
        "2026-10-15 16:02|H1|entity_a|pr-O1|$300.00|estimate|"
        "2026-11-01 00:10|H2|entity_b|pr-O2|$160.00|vendor|"
        "2026-11-10 15:00|H3|entity_a|pr-O3|$125.00|catalog|"
        "2026-12-02 16:05|H6|entity_b|pr-O6|$300.00|estimate"
    ) in text


def _runbook_queries() -> list[str]:
    """The SQL examples of the runbook's analyst section, one statement each."""
    text = (Path(__file__).resolve().parents[2] / "deploy" / "RUNBOOK.md").read_text()
    section = text.split("## Audit log for analysts", 1)[1].split("**Views**", 1)[1]
    block = section.split("```sql", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if not line.lstrip().startswith("--")]
    return [q.strip() for q in "\n".join(lines).split(";") if q.strip()]


def test_the_runbook_queries_run_and_answer(history: sa.Engine) -> None:
    """Every example query of the runbook runs on the history; the spend one answers by hand."""
    queries = _runbook_queries()
    assert len(queries) >= 8
    with history.connect() as connection:
        for query in queries:
            if "percentile_cont" in query and connection.dialect.name == "sqlite":
                continue  # documented as PostgreSQL only
            connection.exec_driver_sql(query).all()
        spend = connection.exec_driver_sql(queries[0]).all()
        held = connection.exec_driver_sql(queries[4]).all()
    assert [tuple(row) for row in spend] == [("entity_b", 1, 300.0)]
    assert held == []
