"""From the vendor's news to the PM system: a delivered order is written back exactly once.

The order is placed at the real sandbox by a real cycle, the delivery is stored as `propready
serve` stores it, and the next cycle applies it (service/vendor_news.py) and runs the write-back
(service/writeback.py) against a real writable SQLite file; the state database is SQLite and
PostgreSQL. The write-back is enqueued in the transaction that records the delivery, so a
repeated or replayed delivery cannot queue it twice, and nothing is queued while [writeback] url
is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, deliveries, outbox
from propready.adapters.store.schema import writeback_outbox
from propready.service import Components, run_cycle
from propready.settings import Settings
from tests.integration.cycle_support import API_KEY, QUERY, REPO, Clock, PmDatabase, home, wired
from tests.integration.test_vendor_news import delivered_body, store
from tests.integration.writeback_support import UPSERT, PmTarget, pm_target


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(home("H1"))
    yield database
    database.close()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[PmTarget]:
    yield from pm_target("sqlite", tmp_path)


def settings(state_url: str, pm_url: str, base_url: str, writeback: dict[str, Any]) -> Settings:
    return Settings(
        state={"url": state_url},
        source={"url": pm_url, "query": QUERY, "timezone": "America/Denver"},
        rules={"path": REPO / "rules"},
        planomatic={"base_url": base_url, "api_key": API_KEY, "requests_per_minute": 6000},
        writeback=writeback,
    )


def deliver_h1(parts: Components, pm: PmDatabase, clock: Clock) -> tuple[str, int]:
    """H1 becomes ready, its order is placed, and its delivery is stored as the receiver would."""
    run_cycle(parts, clock)
    pm.set("H1", status="Vacant Unrented Ready")
    clock.now += timedelta(minutes=5)
    run_cycle(parts, clock)
    with parts.state.connect() as connection:
        (order,) = outbox.list_orders(connection)
    delivery = store(parts, clock, delivered_body(order))
    assert delivery is not None
    clock.now += timedelta(minutes=1)
    return order.external_order_id, delivery


def test_a_delivered_order_is_written_back_once_whatever_repeats(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, target: PmTarget
) -> None:
    clock = Clock()
    wb = {"url": target.url, "statement": UPSERT, "retry_base_seconds": 60}
    with wired(settings(state_url, pm.url, sandbox.url, wb)) as parts:
        external_order_id, delivery = deliver_h1(parts, pm, clock)
        first = run_cycle(parts, clock)
        assert first.delivered == 1
        assert first.writeback_done == 1
        for _ in range(2):  # the same news applied again (`propready webhooks replay`)
            with parts.state.begin() as connection:
                assert deliveries.replay(connection, delivery_id=delivery) == 1
            clock.now += timedelta(hours=1)
            again = run_cycle(parts, clock)
            assert again.delivered == 0
            assert again.writeback_done == 0
        with parts.state.connect() as connection:
            done = audit.query_events(connection, kinds=["writeback_done"])
            queued = connection.execute(sa.select(sa.func.count()).select_from(writeback_outbox))
            assert queued.scalar_one() == 1
    media = target.media()
    assert list(media) == [external_order_id]
    row = media[external_order_id]
    assert row["writes"] == 1  # the statement ran once, not once per copy of the delivery
    assert row["link"] == "https://go.planomatic.example/planox/manage_photos/1"
    assert row["photo_count"] == 2
    assert row["property_id"] == "H1"
    assert len(done) == 1


def test_nothing_is_queued_while_writeback_is_off(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    with wired(settings(state_url, pm.url, sandbox.url, {})) as parts:
        deliver_h1(parts, pm, clock)
        summary = run_cycle(parts, clock)
        assert summary.delivered == 1
        with parts.state.connect() as connection:
            queued = connection.execute(sa.select(sa.func.count()).select_from(writeback_outbox))
            assert queued.scalar_one() == 0
