"""Crash at each named point between the atomic phases (SIGKILL), restart: one vendor order, none lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import audit, outbox
from propready.adapters.store.engine import create_state_engine
from propready.core.orders import OrderState
from tests.integration.cycle_support import QUERY, REPO, PmDatabase


def _run_once(config: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PROPREADY_CRASH_AT"}
    if crash_at is not None:
        env["PROPREADY_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _config(tmp_path: Path, state_url: str, sandbox_url: str, protection_hours: float) -> Path:
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "{state_url}"\n'
        f'[source]\nurl = "{tmp_path.as_uri().replace("file://", "sqlite:///")}/pm.db"\n'
        f'query = "{QUERY}"\ntimezone = "America/Denver"\n'
        f'[rules]\npath = "{REPO / "rules"}"\n'
        f'[planomatic]\nbase_url = "{sandbox_url}"\napi_key = "sandbox-key"\n'
        f"requests_per_minute = 6000\nvendor_duplicate_protection_hours = {protection_hours}\n"
        '[log]\nformat = "json"\n'
    )
    return config


# crash point -> the order's state after the restart, without / with vendor duplicate protection,
# and how many vendor orders exist for the home.
EXPECTED = {
    "after_plan": ((OrderState.PLACED, 1), (OrderState.PLACED, 1)),
    # Leased, then killed before the POST: nothing at the vendor, but nobody can know that.
    "after_lease": ((OrderState.UNKNOWN, 0), (OrderState.PLACED, 1)),
    # The vendor saved it, the outcome was never recorded.
    "after_post": ((OrderState.UNKNOWN, 1), (OrderState.PLACED, 1)),
    "after_outcome": ((OrderState.PLACED, 1), (OrderState.PLACED, 1)),
}


@pytest.mark.slow
@pytest.mark.parametrize("protected", [False, True], ids=["no_vendor_protection", "protected"])
@pytest.mark.parametrize("crash_at", sorted(EXPECTED))
def test_a_crash_at_each_point_never_duplicates_or_loses_the_order(
    tmp_path: Path, state_url: str, pm: PmDatabase, crash_at: str, protected: bool
) -> None:
    """SIGKILL at the named point, restart: one order row, at most one vendor order, state known."""
    hours = 24 if protected else 0
    base = SandboxConfig.default()
    sandbox_config = SandboxConfig(
        api_keys=base.api_keys, catalog=base.catalog, duplicate_threshold_hours=hours
    )
    with SandboxServer(sandbox_config) as sandbox:
        config = _config(tmp_path, state_url, sandbox.url, hours)
        first = _run_once(config)
        assert first.returncode == 0, first.stderr
        pm.set("H1", status="Vacant Unrented Ready")
        crashed = _run_once(config, crash_at=crash_at)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        restarted = _run_once(config)
        assert restarted.returncode == 0, restarted.stderr
        again = _run_once(config)  # a further cycle changes nothing
        assert again.returncode == 0, again.stderr
        vendor_orders = [o for o in sandbox.orders if o["external_property_id"] == "H1"]
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            (order,) = outbox.list_orders(connection)
            kinds = [e["kind"] for e in audit.query_events(connection)]
    finally:
        engine.dispose()
    state, vendor_count = EXPECTED[crash_at][protected]
    assert order.external_property_id == "H1"
    assert order.state == state, kinds
    assert len(vendor_orders) == vendor_count
    if vendor_orders:
        assert vendor_orders[0]["external_order_id"] == order.external_order_id
    if state is OrderState.UNKNOWN:
        assert "order_outcome_unknown" in kinds
    assert kinds.count("order_created") == 1
