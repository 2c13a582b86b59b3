"""Secrets at rest: configured secret columns never reach stored facts or the audit log, and an
order's access code leaves the outbox once nothing will send the request again."""

from __future__ import annotations

import json

import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store.schema import audit_log, orders, readiness_event
from propready.service import run_cycle
from tests.integration.cycle_support import (
    QUERY,
    SECRET_CODE,
    Clock,
    PmDatabase,
    make_settings,
    wired,
)


def test_secret_columns_stay_out_of_facts_and_the_outbox_forgets_the_code(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """A column named in `[source] secret_columns` is masked by name given, not guessed; the
    placed order's stored request no longer holds the access code or the lockbox location."""
    settings = make_settings(state_url, pm.url, sandbox.url)
    source = settings.source.model_copy(
        update={
            "query": QUERY.replace(" FROM homes", ", '99-GATE' AS gate_pin FROM homes"),
            "secret_columns": ("access_code", "lockbox_location", "gate_pin"),
        }
    )
    settings = settings.model_copy(update={"source": source})
    clock = Clock()
    with wired(settings) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        summary = run_cycle(parts, clock)
        with parts.state.connect() as connection:
            facts = connection.execute(sa.select(readiness_event.c.facts)).scalar_one()
            payload = connection.execute(sa.select(orders.c.payload)).scalar_one()
            details = [
                json.dumps(d) for d in connection.execute(sa.select(audit_log.c.detail)).scalars()
            ]
    assert summary.placed == 1
    assert {"gate_pin", "access_code", "lockbox_location"}.isdisjoint(facts)
    assert not any("99-GATE" in d or SECRET_CODE in d for d in details)
    assert "access_code" not in payload["property_access"]
    assert "lockbox_location" not in payload["property_access"]
    sent = sandbox.orders[0]["property_access"]
    assert sent["access_code"] == SECRET_CODE  # it was sent; it is just not kept
