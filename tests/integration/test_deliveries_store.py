"""The webhook delivery store on SQLite and PostgreSQL: once each, claimed in order, replayable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from propready.adapters.store import deliveries
from propready.adapters.store.engine import create_state_engine
from propready.core.vendor_news import VendorNews
from propready.core.webhook_delivery import DeliveryState, interpret
from propready.service.webhook_intake import IntakeResult, store_deliveries

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def body(order_id: int, status: str, minute: int | None = None, **extra: Any) -> bytes:
    data: dict[str, Any] = {"order_id": order_id, "order_status": status, **extra}
    if minute is not None:
        data["event_datetime"] = (NOW + timedelta(minutes=minute)).isoformat()
    return json.dumps(data).encode()


def store(engine: sa.Engine, raw: bytes, at: datetime = NOW) -> int | None:
    with engine.begin() as connection:
        return deliveries.insert_delivery(connection, interpret(raw), at)


def test_a_delivery_is_stored_once(state_engine: sa.Engine) -> None:
    """The same body twice: one row; the second insert reports the duplicate (None)."""
    first = store(state_engine, body(100001, "scheduled", 1))
    again = store(state_engine, body(100001, "scheduled", 1))
    assert first is not None
    assert again is None
    with state_engine.connect() as connection:
        (row,) = deliveries.list_deliveries(connection)
        assert deliveries.count_by_state(connection) == {"pending": 1}
    assert row.id == first
    assert (row.vendor_order_id, row.order_status, row.event_at) == (
        "100001",
        "scheduled",
        NOW + timedelta(minutes=1),
    )
    assert row.status_rank is not None
    assert row.applied_at is None


def test_the_stored_body_is_masked_and_reads_back_whole(state_engine: sa.Engine) -> None:
    """No access code reaches the table; the stored body parses back into the full record."""
    raw = body(
        100002,
        "completed",
        2,
        property_access={"access_code": "4711-secret"},
        links={"photo_manage_link": "https://go.example/1"},
        photos=[{"sequence": 1, "caption": "Front", "full_size_url": "https://p.example/1.jpg"}],
    )
    delivery_id = store(state_engine, raw)
    assert delivery_id is not None
    with state_engine.connect() as connection:
        dump = json.dumps(
            [
                dict(r)
                for r in connection.execute(sa.text("SELECT * FROM webhook_delivery")).mappings()
            ],
            default=str,
        )
        delivery = deliveries.get_delivery(connection, delivery_id)
    assert "4711-secret" not in dump
    assert delivery is not None
    news = delivery.news()
    assert isinstance(news, VendorNews)
    assert news.links["photo_manage_link"] == "https://go.example/1"
    assert news.photos[0].caption == "Front"


def test_malformed_deliveries_are_kept_with_their_reason(state_engine: sa.Engine) -> None:
    """Text that is not JSON is stored as masked text, flagged malformed, never claimed."""
    store(state_engine, b'{"order_id": 1, "access_code": "4711", broken')
    with state_engine.begin() as connection:
        (row,) = deliveries.list_deliveries(connection, states=[DeliveryState.MALFORMED])
        assert row.body is None
        assert row.raw_text is not None
        assert "4711" not in row.raw_text
        assert row.problem is not None
        assert "not JSON" in row.problem
        assert deliveries.claim_pending(connection, 10) == []


def test_pending_deliveries_are_claimed_per_order_oldest_news_first(
    state_engine: sa.Engine,
) -> None:
    """Grouped by order, then by event time (none first), status rank and receipt."""
    # Received out of order, for two orders.
    store(state_engine, body(100002, "on_site", 5))
    store(state_engine, body(100001, "completed", 9))
    store(state_engine, body(100001, "scheduled", 3))
    store(state_engine, body(100001, "ordered"))
    store(state_engine, body(100002, "scheduled", 4))
    with state_engine.begin() as connection:
        claimed = deliveries.claim_pending(connection, 10)
    assert [(d.vendor_order_id, d.order_status) for d in claimed] == [
        ("100001", "ordered"),
        ("100001", "scheduled"),
        ("100001", "completed"),
        ("100002", "scheduled"),
        ("100002", "on_site"),
    ]


def test_marking_applied_and_unmatched_and_requeueing(state_engine: sa.Engine) -> None:
    """Applied rows leave the queue; unmatched ones wait until their order appears."""
    applied = store(state_engine, body(100001, "scheduled", 1))
    unmatched = store(state_engine, body(999999, "scheduled", 1, external_order_id="pr-x"))
    assert applied is not None
    assert unmatched is not None
    with state_engine.begin() as connection:
        deliveries.mark_applied(connection, applied, NOW)
        deliveries.mark_unmatched(connection, unmatched, "no order with vendor id 999999")
    with state_engine.begin() as connection:
        assert deliveries.claim_pending(connection, 10) == []
        row = deliveries.get_delivery(connection, unmatched)
        assert row is not None
        assert row.state is DeliveryState.UNMATCHED
        assert row.problem == "no order with vendor id 999999"
        assert deliveries.requeue_unmatched(connection, external_order_id="pr-x") == 1
    with state_engine.begin() as connection:
        assert [d.id for d in deliveries.claim_pending(connection, 10)] == [unmatched]


def test_replay_makes_applied_deliveries_pending_again(state_engine: sa.Engine) -> None:
    """By id or by receipt time; malformed rows are never made pending."""
    old = store(state_engine, body(100001, "scheduled", 1), NOW - timedelta(days=2))
    new = store(state_engine, body(100001, "on_site", 2), NOW)
    store(state_engine, b"not json", NOW)
    assert old is not None
    assert new is not None
    with state_engine.begin() as connection:
        for delivery_id in (old, new):
            deliveries.mark_applied(connection, delivery_id, NOW)
    with state_engine.begin() as connection:
        assert deliveries.replay(connection, since=NOW - timedelta(hours=1)) == 1
        assert [d.id for d in deliveries.claim_pending(connection, 10)] == [new]
    with state_engine.begin() as connection:
        assert deliveries.replay(connection, delivery_id=old) == 1
        row = deliveries.get_delivery(connection, old)
        assert row is not None
        assert row.applied_at is None
        assert deliveries.count_by_state(connection) == {"pending": 2, "malformed": 1}
    with state_engine.begin() as connection, pytest.raises(ValueError, match="name a delivery"):
        deliveries.replay(connection)


@pytest.mark.postgres
def test_two_appliers_claim_disjoint_deliveries_on_postgresql(pg_state_url: str) -> None:
    """FOR UPDATE SKIP LOCKED: a second host skips what the first has claimed."""
    engine = create_state_engine(pg_state_url)
    try:
        for minute in range(6):
            store(engine, body(100001 + minute, "scheduled", minute))
        with engine.begin() as first:
            mine = deliveries.claim_pending(first, 3)
            with engine.begin() as second:
                theirs = deliveries.claim_pending(second, 10)
        assert len(mine) == 3
        assert len(theirs) == 3
        assert {d.id for d in mine}.isdisjoint(d.id for d in theirs)
    finally:
        engine.dispose()


def _refuse_order_666(engine: sa.Engine) -> None:
    """A trigger that makes the database refuse one delivery, as a full disk or a constraint
    might refuse one row: a real failure inside the shared transaction."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text(
                    "CREATE FUNCTION refuse_666() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.vendor_order_id = '666' THEN RAISE EXCEPTION 'refused'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            connection.execute(
                sa.text(
                    "CREATE TRIGGER refuse_666 BEFORE INSERT ON webhook_delivery "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_666()"
                )
            )
        else:
            connection.execute(
                sa.text(
                    "CREATE TRIGGER refuse_666 BEFORE INSERT ON webhook_delivery "
                    "WHEN NEW.vendor_order_id = '666' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )


def test_deliveries_stored_together_fail_alone(state_engine: sa.Engine) -> None:
    """Group commit: one delivery the database refuses fails by itself; the others of its
    batch are stored, a repeat within the batch is a duplicate."""
    _refuse_order_666(state_engine)
    first, poison, second = body(100001, "ordered"), body(666, "ordered"), body(100002, "ordered")
    results = store_deliveries(state_engine, [first, poison, second, first], NOW)
    outcomes = [r.outcome if isinstance(r, IntakeResult) else type(r).__name__ for r in results]
    assert outcomes[0] == "stored"
    assert isinstance(results[1], sa.exc.SQLAlchemyError)
    assert outcomes[2:] == ["stored", "duplicate"]
    with state_engine.connect() as connection:
        assert [d.vendor_order_id for d in deliveries.list_deliveries(connection)] == [
            "100001",
            "100002",
        ]
