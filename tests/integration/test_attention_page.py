"""The console's start page reads a window of the large attention kinds, yet shows exactly what
the whole list would: the same oldest items and the same total, whatever the silences."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from propready.adapters.store import attention as attention_store
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import orders, source_quarantine
from propready.core.attention import Silence
from propready.service.attention import attention_list, attention_page
from propready.settings import Settings

NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)


def _settings(state_url: str) -> Settings:
    return Settings(
        state={"url": state_url},
        source={"url": "sqlite:///unused.db", "query": "SELECT 'x' AS external_property_id"},
    )


def _fill(engine: sa.Engine, rng: random.Random) -> None:
    """Orders waiting for approval and unknown ones, and quarantined rows: created at times
    unrelated to their ids, with ties, and ids that do not sort like their times."""
    rows = []
    for n in range(260):
        state = "awaiting_approval" if n % 3 else "unknown"
        # Approvals hold the oldest items, so the window of that kind decides the top of the page.
        hours = rng.choice([1, 2, 2, 5, 40, 90] if state == "awaiting_approval" else [1, 2, 5])
        created = NOW - timedelta(hours=hours, minutes=rng.randint(0, 3))
        rows.append(
            {
                "external_order_id": f"pr-{rng.randint(0, 10**9):09d}-{n}",
                "external_property_id": f"H{n}",
                "billing_entity_slug": "investment_entity_1",
                "state": state,
                "payload": {},
                "created_at": created,
                "window_end": created + timedelta(days=30),
                "updated_at": created + timedelta(minutes=rng.choice([0, 0, 7])),
                "last_error": "timeout" if state == "unknown" else None,
            }
        )
    rng.shuffle(rows)
    held = [
        {
            "row_key": f"U{rng.randint(0, 10**6)}-{n}" if n % 4 else f"#{n:032x}",
            "row_hash": f"{n:032x}",
            "column_name": "bedrooms",
            "reason": "not a number",
            "first_seen_at": NOW - timedelta(hours=rng.choice([3, 3, 30])),
            "last_seen_at": NOW,
        }
        for n in range(40)
    ]
    with engine.begin() as connection:
        connection.execute(orders.insert(), rows)
        connection.execute(source_quarantine.insert(), held)


def _silence(engine: sa.Engine, silences: list[Silence]) -> None:
    with engine.begin() as connection:
        for silence in silences:
            attention_store.save_silence(connection, silence)


def test_the_start_page_window_matches_the_whole_list(state_url: str) -> None:
    engine = create_state_engine(state_url)
    settings = _settings(state_url)
    rng = random.Random(11)
    try:
        _fill(engine, rng)
        everything = attention_list(engine, settings, NOW, include_silenced=True)
        items = [entry.item for entry in everything]
        by_kind = {kind: [i for i in items if i.kind.value == kind] for kind in ("approval",)}
        approvals = by_kind["approval"]
        at = NOW - timedelta(minutes=5)
        silences = [
            # acknowledged, in the oldest window and far beyond it
            Silence(approvals[0].key, "ack", "seen", "ops", at, version=approvals[0].version),
            Silence(approvals[1].key, "ack", "seen", "ops", at, version=approvals[1].version),
            Silence(approvals[-1].key, "ack", "seen", "ops", at, version=approvals[-1].version),
            # acknowledged before the item changed: it shows again
            Silence(approvals[-2].key, "ack", "seen", "ops", at, version="stale"),
            # snoozed beyond the window, and a snooze that has ended
            Silence(approvals[-3].key, "snooze", "later", "ops", at, NOW + timedelta(hours=1)),
            Silence(approvals[-4].key, "snooze", "later", "ops", at, NOW - timedelta(hours=1)),
            # silences of items that no longer exist
            Silence("approval:pr-gone", "ack", "done", "ops", at, version="x"),
            Silence("quarantined:U-gone", "snooze", "later", "ops", at, NOW + timedelta(days=1)),
        ]
        quarantined = [i for i in items if i.kind.value == "quarantined"]
        silences.append(
            Silence(quarantined[-1].key, "ack", "ok", "ops", at, version=quarantined[-1].version)
        )
        unknown = [i for i in items if i.kind.value == "unknown"]
        silences.append(Silence(unknown[0].key, "snooze", "x", "ops", at, NOW + timedelta(hours=2)))
        _silence(engine, silences)

        whole = attention_list(engine, settings, NOW)
        assert len(whole) == len(items) - 6  # four acknowledged, two snoozed
        for shown in (1, 2, 5, 17, 60, 200, 400):
            page = attention_page(engine, settings, NOW, shown)
            assert [e.item for e in page.listed] == [e.item for e in whole[:shown]], shown
            assert [e.overdue for e in page.listed] == [e.overdue for e in whole[:shown]]
            assert page.total == len(whole), shown
    finally:
        engine.dispose()
