"""Claiming due orders across senders: SKIP LOCKED, leases renewed or lost, parking on stop."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, outbox, pacing
from propready.adapters.store.engine import create_state_engine
from propready.core.orders import Order, OrderState
from propready.service import CycleSummary, poll_step, recover, send_due
from propready.service.status_sync import sync_statuses
from tests.integration.cycle_support import Clock, PmDatabase, home, make_settings, wired


def _plan_three(parts: Any, pm: PmDatabase, clock: Clock) -> None:
    """Three homes seen, then ready: three planned orders, nothing sent yet."""
    pm.insert(home("H3"))
    poll_step(parts, clock, CycleSummary(), respect_backoff=False)
    for code in ("H1", "H2", "H3"):
        pm.set(code, status="Vacant Unrented Ready")
    summary = CycleSummary()
    poll_step(parts, clock, summary, respect_backoff=False)
    assert summary.orders_created == 3


def _orders(engine: sa.Engine) -> list[Order]:
    with engine.connect() as connection:
        return outbox.list_orders(connection)


@pytest.mark.postgres
def test_a_claim_skips_orders_another_sender_holds_instead_of_waiting(
    pg_state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """While one sender's claim transaction is open, a second sender claims the next order."""
    clock = Clock()
    url = pg_state_url
    with wired(make_settings(url, pm.url, sandbox.url)) as parts:
        _plan_three(parts, pm, clock)
        first = parts.state.connect()
        try:
            transaction = first.begin()
            held = outbox.claim_due(first, "host-a:1", clock(), 60)
            assert held is not None
            second_engine = create_state_engine(
                url, connect_args={"options": "-c lock_timeout=2000"}
            )
            try:
                with second_engine.begin() as second:
                    other = outbox.claim_due(second, "host-b:2", clock(), 60)
            finally:
                second_engine.dispose()
            assert other is not None
            assert other.id != held.id
            assert other.lease_owner == "host-b:2"
            transaction.commit()
        finally:
            first.close()
        states = sorted(order.state for order in _orders(parts.state))
        assert states == ["planned", "sending", "sending"]


def _slot_just_taken(parts: Any) -> None:
    """Someone else just took the current send slot: the next sender waits 30 s for its own."""
    parts.pacer.interval = 30.0
    with parts.state.begin() as connection:
        pacing.reserve_send_slot(connection, parts.pacer.name, 30.0)


def test_a_stop_parks_the_order_waiting_for_its_slot_and_sends_nothing(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """SIGTERM while waiting for a rate-limit slot: back to planned, attempt not counted."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        _plan_three(parts, pm, clock)

        def stop_while_waiting(_seconds: float) -> None:
            parts.stop_requested.set()  # the signal arrives during the wait

        parts.pacer._sleep = stop_while_waiting
        _slot_just_taken(parts)
        summary = CycleSummary()
        assert send_due(parts, clock, summary) is True  # stopped early
        assert (summary.parked, summary.sent) == (1, 0)
        assert sandbox.orders == []
        orders = _orders(parts.state)
        assert [o.state for o in orders] == ["planned"] * 3
        assert all(o.attempts == 0 for o in orders)
        with parts.state.connect() as connection:
            parked = audit.query_events(connection, kinds=["order_parked"])
        assert len(parked) == 1


def test_a_lease_taken_over_during_the_wait_is_not_sent(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """If recovery elsewhere took the order while this sender waited, this one does not send."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        _plan_three(parts, pm, clock)

        def taken_over_meanwhile(_seconds: float) -> None:
            with parts.state.begin() as connection:
                connection.execute(
                    sa.text(
                        "UPDATE orders SET lease_owner = 'other-host:9' WHERE state = 'sending'"
                    )
                )

        parts.pacer._sleep = taken_over_meanwhile
        _slot_just_taken(parts)
        summary = CycleSummary()
        send_due(parts, clock, summary, limit=1)
        assert summary.sent == 0
        assert sandbox.orders == []
        owners = [o.lease_owner for o in _orders(parts.state) if o.state == "sending"]
        assert owners == ["other-host:9"]


def test_renew_and_park_only_touch_the_owners_lease(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """The lease helpers never move an order another sender owns."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        _plan_three(parts, pm, clock)
        now = clock()
        with parts.state.begin() as connection:
            claimed = outbox.claim_due(connection, "me:1", now, 60)
            assert claimed is not None
            order_id = int(claimed.id)
            assert claimed.attempts == 1
            assert not outbox.renew_lease(connection, order_id, "you:2", now, 60)
            assert not outbox.park(connection, order_id, "you:2", now)
            later = now + timedelta(seconds=30)
            assert outbox.renew_lease(connection, order_id, "me:1", later, 60)
            renewed = outbox.get_order(connection, order_id)
            assert renewed is not None
            assert renewed.lease_until == later + timedelta(seconds=60)
            assert outbox.park(connection, order_id, "me:1", later)
            parked = outbox.get_order(connection, order_id)
        assert parked is not None
        assert parked.state == OrderState.PLANNED.value
        assert parked.attempts == 0
        assert parked.lease_owner is None


def test_only_one_host_takes_over_an_abandoned_order(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """Two hosts that both saw the same expired lease: the second take-over finds it gone."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        _plan_three(parts, pm, clock)
        now = clock()
        with parts.state.begin() as connection:
            claimed = outbox.claim_due(connection, "dead-host:1", now, 60)
        assert claimed is not None
        later = now + timedelta(seconds=61)
        with parts.state.begin() as connection:
            (stale,) = outbox.expired_leases(connection, later)
            order_id = int(stale.id)
            assert outbox.take_over(connection, order_id, "dead-host:1", "host-a:1", later, 60)
            assert not outbox.take_over(connection, order_id, "dead-host:1", "host-b:2", later, 60)
            assert outbox.expired_leases(connection, later) == []
        # Recovery on a third host finds nothing left to do, and writes nothing.
        parts.owner = "host-c:3"
        summary = CycleSummary()
        recover(parts, later, summary)
        assert summary.recovered == 0
        with parts.state.connect() as connection:
            assert audit.query_events(connection, kinds=["order_outcome_after_lease_lost"]) == []
            order = outbox.get_order(connection, order_id)
        assert order is not None
        assert (order.state, order.lease_owner) == ("sending", "host-a:1")


def test_a_placed_order_is_status_checked_by_one_host_per_interval(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """The second host to look finds the check taken; the vendor sees one retrieve, not two."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        _plan_three(parts, pm, clock)
        send_due(parts, clock, CycleSummary())
        clock.now += timedelta(minutes=16)
        before = clock.now - timedelta(minutes=15)
        with parts.state.begin() as connection:
            due = outbox.orders_to_sync(connection, before, 10)
            assert len(due) == 3
            assert outbox.claim_status_check(connection, due[0], before, clock.now)
            assert not outbox.claim_status_check(connection, due[0], before, clock.now)
        requests = sandbox.requests_seen()
        summary = CycleSummary()
        sync_statuses(parts, clock.now, summary)  # the other host: two orders left to check
        assert summary.status_checked == 2
        assert sandbox.requests_seen() - requests == 2
