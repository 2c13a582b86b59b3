"""Reconciliation: with webhooks flowing, retrieve only orders without news for
reconcile_after_hours, the longest without news first, at most sync_share of the rate limit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, outbox
from propready.adapters.store.schema import orders, send_pacing
from propready.service import CycleSummary
from propready.service.status_sync import reconcile_statuses
from propready.settings import Settings
from propready.wiring import sync_pacer_for
from tests.integration.cycle_support import Clock, PmDatabase, home, make_settings, wired
from tests.integration.test_vendor_news import place_orders

OPEN_ORDERS = 10_000
STALE = 30  # two real orders at the sandbox and 28 the sandbox does not know


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(home("H1"), home("H2"))
    yield database
    database.close()


def test_only_orders_without_news_are_retrieved_within_the_share(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = make_settings(state_url, pm.url, sandbox.url)
    with wired(settings) as parts:
        placed = place_orders(parts, pm, clock)
        clock.now += timedelta(days=3)
        now = clock.now
        fresh = now - timedelta(hours=1)  # webhooks keep these orders' news recent
        stale_at = [now - timedelta(hours=30 + i) for i in range(STALE)]
        rows = [
            {
                "external_order_id": f"pr-bulk-{i}",
                "external_property_id": f"B{i}",
                "billing_entity_slug": "investment_entity_1",
                "state": "placed",
                "vendor_status": "scheduled",
                "vendor_order_id": f"9{i:07d}",
                "payload": {},
                "created_at": now - timedelta(days=3),
                "window_end": now - timedelta(days=3),
                "updated_at": now - timedelta(days=3),
                "vendor_news_at": stale_at[i] if i < STALE - 2 else fresh,
            }
            for i in range(OPEN_ORDERS - 2)
        ]
        with parts.state.begin() as connection:
            connection.execute(orders.insert(), rows)
            for order, at in zip(placed.values(), stale_at[-2:], strict=True):
                connection.execute(
                    orders.update().where(orders.c.id == order.id).values(vendor_news_at=at)
                )
        parts.sync_pacer = sync_pacer_for(settings, parts.stop_requested)
        sandbox.advance_status(int(placed["H1"].vendor_order_id or 0), "scheduled")
        before = sandbox.requests_seen()
        summary = CycleSummary()
        started = time.monotonic()
        reconcile_statuses(parts, now, summary)
        elapsed = time.monotonic() - started
        retrieves = sandbox.requests_seen() - before
        assert retrieves == STALE  # none of the 9,970 orders with recent news
        assert summary.status_checked == 2  # the sandbox answers for the two it knows
        share = _share(settings)
        # Evenly spaced on reconciliation's own schedule: STALE - 1 intervals at least.
        assert elapsed >= (STALE - 1) * 60 / (settings.planomatic.requests_per_minute * share)
        assert retrieves / elapsed <= settings.planomatic.requests_per_minute / 60 * share * 1.05
        with parts.state.connect() as connection:
            checked = connection.execute(
                sa.select(orders.c.external_order_id)
                .where(orders.c.status_checked_at == now)
                .order_by(orders.c.external_order_id)
            ).scalars()
            names = set(checked)
            both = [outbox.get_order(connection, o.id) for o in placed.values()]
            slots = dict(connection.execute(sa.select(send_pacing)).all())
            changes = audit.query_events(connection, kinds=["order_status_changed"])
        assert len(names) == STALE
        assert all(o is not None and o.vendor_news_at == now for o in both)
        (change,) = changes
        assert (change["external_order_id"], change["detail"]["to"]) == (
            placed["H1"].external_order_id,
            "scheduled",
        )
        assert change["detail"]["source"] == "retrieve"
        # Each retrieve also took a slot on the shared schedule that creates use.
        assert set(slots) == {"planomatic", "planomatic_reconcile"}
        # A second run finds nothing due: the news time (or the check) moved on.
        again = CycleSummary()
        before = sandbox.requests_seen()
        reconcile_statuses(parts, now + timedelta(minutes=1), again)
        assert sandbox.requests_seen() == before


def _share(settings: Settings) -> float:
    return 0.98 * settings.planomatic.sync_share
