"""A readiness is not used up by a failure a person can fix: it stays open, is planned again
when the row, the rules or the configuration change, and `propready reorder` orders a home now."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import audit, outbox
from propready.adapters.store.schema import readiness_event
from propready.core.orders import OrderState
from propready.service import Components, run_cycle
from propready.service.backfill import backfill
from propready.service.operator import cancel
from propready.service.reorder import ReorderRefused, reorder
from propready.settings import Settings
from tests.integration.cycle_support import QUERY, Clock, PmDatabase, make_settings, wired

# The query of a first deployment that forgot the access columns the vendor requires.
NO_ACCESS = (
    QUERY.replace("'lockbox_code' AS method_of_access, ", "")
    .replace("'Pat Leasing' AS onsite_contact_name, ", "")
    .replace("'+1 303-555-0100' AS onsite_contact_phone, ", "")
)


def _with(settings: Settings, section: str, **values: Any) -> Settings:
    part = getattr(settings, section).model_copy(update=values)
    return settings.model_copy(update={section: part})


def _events(parts: Components) -> list[tuple[str, str, str, int]]:
    with parts.state.connect() as connection:
        rows = connection.execute(
            sa.select(
                readiness_event.c.external_property_id,
                readiness_event.c.trigger_name,
                readiness_event.c.state,
                readiness_event.c.plan_attempts,
            ).order_by(readiness_event.c.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def _kinds(parts: Components, kind: str) -> list[dict[str, Any]]:
    with parts.state.connect() as connection:
        return audit.query_events(connection, kinds=[kind])


@pytest.fixture
def strict_sandbox() -> Iterator[SandboxServer]:
    """A vendor whose key bills another entity: it refuses investment_entity_1 (a 400)."""
    config = dataclasses.replace(
        SandboxConfig.default(), api_keys={"sandbox-key": frozenset({"other_entity"})}
    )
    with SandboxServer(config) as server:
        yield server


def test_a_missing_column_keeps_the_readiness_open_until_the_query_provides_it(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """The new-user path: every order is not plannable (no access columns); once the operator
    adds them to the query, the same readiness is ordered, with no change in the PM data."""
    clock = Clock()
    broken = _with(make_settings(state_url, pm.url, sandbox.url), "source", query=NO_ACCESS)
    with wired(broken) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        first = run_cycle(parts, clock)
        assert (first.events, first.invalid, first.orders_created) == (1, 1, 0)
        for _ in range(2):  # nothing changed: not planned again (bounded)
            clock.now += timedelta(minutes=5)
            again = run_cycle(parts, clock)
            assert (again.replanned, again.invalid) == (0, 0)
        assert _events(parts) == [("H1", "vacant_ready", "open", 0)]
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        clock.now += timedelta(minutes=5)
        fixed = run_cycle(parts, clock)
        (replanned,) = _kinds(parts, "readiness_replanned")
        assert _events(parts) == [("H1", "vacant_ready", "ordered", 1)]
    assert (fixed.replanned, fixed.orders_created, fixed.placed) == (1, 1, 1)
    assert "the configuration changed" in replanned["detail"]["because"]
    assert [o["external_property_id"] for o in sandbox.orders] == ["H1"]


def test_a_rejected_order_reopens_its_readiness_and_reorder_orders_the_home(
    state_url: str, pm: PmDatabase, strict_sandbox: SandboxServer, sandbox: SandboxServer
) -> None:
    """The vendor refused the order: the readiness stays open (not re-sent without a change);
    `reorder` orders the home again, under a new order id, once the cause is fixed."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, strict_sandbox.url)) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        rejected = run_cycle(parts, clock)
        assert rejected.rejected == 1
        clock.now += timedelta(minutes=5)
        assert run_cycle(parts, clock).sent == 0  # open, but nothing changed: no new attempt
        assert _events(parts) == [("H1", "vacant_ready", "open", 1)]
        (reopened,) = _kinds(parts, "readiness_reopened")
        assert reopened["detail"]["reason"] == "the order was rejected"
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        done = reorder(
            parts, "H1", reason="entity linked at PlanOmatic", by="ops@host", now=clock.now
        )
        sent = run_cycle(parts, clock)
        with parts.state.connect() as connection:
            orders = outbox.list_orders(connection)
        (requested,) = _kinds(parts, "reorder_requested")
    assert sent.placed == 1
    assert [o.state for o in orders] == [OrderState.REJECTED, OrderState.PLACED]
    assert orders[1].external_order_id == done.external_order_id != orders[0].external_order_id
    assert requested["detail"] == {
        "reason": "entity linked at PlanOmatic",
        "by": "ops@host",
        "ignore_window": False,
        "outcome": "ordered",
    }
    assert [o["external_property_id"] for o in sandbox.orders] == ["H1"]


def test_reorder_refuses_in_one_line_and_overrides_a_window_only_when_asked(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """Unknown home, a window taken; `--ignore-window` orders anyway, holding no window itself;
    each request is audited, refusals included."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        run_cycle(parts, clock)  # H1 ordered: its window is open
        with pytest.raises(ReorderRefused, match="no home 'H9' in the source query"):
            reorder(parts, "H9", reason="typo", by="ops", now=clock.now)
        with pytest.raises(ReorderRefused, match=r"duplicate window runs until .* --ignore-window"):
            reorder(parts, "H1", reason="reshoot", by="ops", now=clock.now)
        with pytest.raises(ReorderRefused, match="unknown trigger 'nope'"):
            reorder(parts, "H1", reason="reshoot", by="ops", now=clock.now, trigger="nope")
        done = reorder(parts, "H1", reason="reshoot", by="ops", now=clock.now, ignore_window=True)
        with parts.state.connect() as connection:
            order = outbox.find_by_external_order_id(connection, done.external_order_id)
        requests = _kinds(parts, "reorder_requested")
    assert done.window_ignored
    assert order is not None
    assert order.window_end == order.created_at  # it holds no window of its own
    assert [r["detail"]["outcome"] for r in requests] == ["refused"] * 3 + ["ordered"]
    assert requests[-1]["detail"]["overrode_window_of"].startswith("pr-")


def test_dry_run_consumes_nothing_and_backfill_offers_it_once_live(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """What fired in dry run is recorded as dry run; after switching to live, `backfill
    --dry-run` lists it and `backfill` orders it; the two agree."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url, mode="dry_run")) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        run_cycle(parts, clock)
        assert _events(parts) == [("H1", "vacant_ready", "dry_run", 0)]
    with wired(make_settings(state_url, pm.url, sandbox.url)) as parts:
        would = backfill(parts, clock, dry_run=True)
        assert [(c.external_property_id, c.kind) for c in would] == [("H1", "dry_run")]
        fired = backfill(parts, clock, dry_run=False)
        assert [(c.external_property_id, c.kind) for c in fired] == [("H1", "dry_run")]
        assert backfill(parts, clock, dry_run=True) == []
        sent = run_cycle(parts, clock)
        assert _events(parts) == [("H1", "vacant_ready", "ordered", 1)]
    assert sent.placed == 1


def test_a_cancel_before_sending_keeps_the_readiness_for_the_next_change(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """An order canceled before it was sent frees its readiness: the next change of the home's
    row plans it again (while its trigger holds)."""
    clock = Clock()
    with wired(make_settings(state_url, pm.url, sandbox.url, mode="approval")) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        run_cycle(parts, clock)
        with parts.state.connect() as connection:
            (waiting,) = outbox.list_orders(connection)
        cancel(
            parts.state, None, waiting.external_order_id, "client_requested_cancelation",
            "wrong lockbox", clock.now, "ops",
        )  # fmt: skip
        assert _events(parts)[0][2] == "open"
        pm.set("H1", lockbox="5512")  # the fix: the row changes
        clock.now += timedelta(minutes=5)
        replanned = run_cycle(parts, clock)
        with parts.state.connect() as connection:
            states = [o.state for o in outbox.list_orders(connection)]
    assert replanned.replanned == 1
    assert states == [OrderState.CANCELED, OrderState.AWAITING_APPROVAL]


def test_an_open_readiness_whose_trigger_fell_is_closed_not_ordered(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """A home that is no longer ready when its row changes is not ordered from an old readiness."""
    clock = Clock()
    broken = _with(make_settings(state_url, pm.url, sandbox.url), "source", query=NO_ACCESS)
    with wired(broken) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        run_cycle(parts, clock)
        pm.set("H1", status="Occupied")
        clock.now += timedelta(minutes=5)
        closed = run_cycle(parts, clock)
        (closing,) = _kinds(parts, "readiness_closed")
        events = _events(parts)
    assert (closed.replanned, closed.orders_created) == (0, 0)
    assert closing["detail"]["reason"] == "its trigger no longer holds"
    assert events == [("H1", "vacant_ready", "closed", 0)]
