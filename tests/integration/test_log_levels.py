"""Outcomes a person must look at (rejected, unknown, not plannable) are logged at warning."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from propready.adapters.catalog_file import load_catalog
from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.service import run_cycle
from tests.integration.cycle_support import API_KEY, Clock, PmDatabase, make_settings, wired


@pytest.fixture
def foreign_entity_sandbox() -> Iterator[SandboxServer]:
    """A vendor whose key bills another entity: every order of investment_entity_1 is refused."""
    config = SandboxConfig(api_keys={API_KEY: frozenset({"other_llc"})}, catalog=load_catalog())
    with SandboxServer(config) as server:
        yield server


def _ready_h1(state_url: str, pm: PmDatabase, base_url: str) -> list[dict[str, Any]]:
    clock = Clock()
    with wired(make_settings(state_url, pm.url, base_url)) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        clock.now += timedelta(minutes=5)
        with capture_logs() as logs:
            run_cycle(parts, clock)
    return logs


def _levels(logs: list[dict[str, Any]], event: str) -> list[str]:
    return [entry["log_level"] for entry in logs if entry["event"] == event]


def test_a_rejected_order_logs_at_warning(
    state_url: str, pm: PmDatabase, foreign_entity_sandbox: SandboxServer
) -> None:
    """order_rejected and the cycle line that counts it are warnings; placed ones stay info."""
    logs = _ready_h1(state_url, pm, foreign_entity_sandbox.url)
    assert _levels(logs, "order_rejected") == ["warning"]
    assert _levels(logs, "cycle") == ["warning"]


def test_an_unknown_outcome_logs_at_warning(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """A 500 after the create leaves the order unknown: logged at warning."""
    sandbox.inject("create", "500")
    logs = _ready_h1(state_url, pm, sandbox.url)
    assert _levels(logs, "order_outcome_unknown") == ["warning"]
    assert _levels(logs, "cycle") == ["warning"]


def test_a_placed_order_logs_at_info(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """The usual path stays at info, so warnings keep their meaning."""
    logs = _ready_h1(state_url, pm, sandbox.url)
    assert _levels(logs, "order_placed") == ["info"]
    assert _levels(logs, "cycle") == ["info"]


def test_a_not_plannable_order_raises_the_cycle_line_to_warning(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """A decision whose order the vendor would refuse counts as invalid: the cycle line warns."""
    pm.set("H1", zip="802")
    logs = _ready_h1(state_url, pm, sandbox.url)
    (cycle,) = [entry for entry in logs if entry["event"] == "cycle"]
    assert (cycle["log_level"], cycle["invalid"]) == ("warning", 1)
    assert sandbox.orders == []
