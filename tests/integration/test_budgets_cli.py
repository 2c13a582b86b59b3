"""Budgets through the command line: rules check, simulate, orders approve --over-budget, explain."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, outbox
from propready.adapters.store.engine import create_state_engine
from propready.core.audit_kinds import AuditKind
from propready.core.orders import OrderState
from propready.service import run_cycle
from propready.settings import RulesSettings
from tests.integration.cycle_support import (
    QUERY,
    REPO,
    Clock,
    PmDatabase,
    home,
    make_settings,
    wired,
)

BUDGETS = "budgets:\n  - {name: two-a-month, period: month, max_orders: 2}\n"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """The shipped rules plus a budget of two orders a month across all entities."""
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copy(REPO / "rules" / "readiness.yaml", folder)
    (folder / "budgets.yaml").write_text(BUDGETS)
    return folder


@pytest.fixture
def pm(tmp_path: Path) -> Any:
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(home("H1"), home("H2"), home("H3"))
    yield database
    database.close()


def _config(tmp_path: Path, state_url: str, rules: Path, sandbox_url: str) -> Path:
    config = tmp_path / "propready.toml"
    state = state_url.replace("postgresql://", "postgresql+psycopg://")
    config.write_text(
        f'[state]\nurl = "{state}"\n'
        f'[source]\nurl = "sqlite:///{tmp_path / "pm.db"}"\nquery = "{QUERY}"\n'
        'timezone = "America/Denver"\n'
        f'[rules]\npath = "{rules}"\n'
        f'[planomatic]\nbase_url = "{sandbox_url}"\napi_key = "sandbox-key"\n'
        '[log]\nformat = "json"\n'
    )
    return config


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )


def _rows(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_rules_check_reports_a_bad_budget_with_file_and_line(tmp_path: Path, rules: Path) -> None:
    """`rules check` refuses a budget without limits, naming the file and line; exit 1."""
    (rules / "budgets.yaml").write_text("budgets:\n  - {name: oops, period: week}\n")
    result = _cli(tmp_path / "none.toml", "rules", "check", str(rules), "--fields", "status")
    assert result.returncode == 1
    assert f"{rules / 'budgets.yaml'}:2: budget 'oops': needs max_orders, max_spend_usd" in (
        result.stdout + result.stderr
    )


def test_simulate_shows_which_homes_a_budget_would_hold(
    tmp_path: Path, state_url: str, rules: Path, pm: PmDatabase
) -> None:
    """Three homes ready, two orders a month: simulate marks the third as held by the budget."""
    for code in ("H1", "H2", "H3"):
        pm.set(code, status="Vacant Unrented Ready")
    config = _config(tmp_path, state_url, rules, "http://127.0.0.1:9")
    rows = _rows(_cli(config, "simulate", "--format", "jsonl"))
    assert [(r["external_property_id"], r["budget"]) for r in rows] == [
        ("H1", ""),
        ("H2", ""),
        ("H3", "hold: budget two-a-month"),
    ]


def test_approving_a_held_order_over_its_budget_needs_a_reason(
    tmp_path: Path, state_url: str, rules: Path, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """The held order is refused without --over-budget, and --over-budget needs --reason; with
    both it is released and the audit log and explain name the budget and the reason."""
    settings = make_settings(state_url, pm.url, sandbox.url)
    settings = settings.model_copy(update={"rules": RulesSettings(path=rules)})
    clock = Clock(datetime.now(UTC))  # the CLI approves now: the orders must be this month's
    with wired(settings) as parts:
        run_cycle(parts, clock)
        for code in ("H1", "H2", "H3"):
            pm.set(code, status="Vacant Unrented Ready")
        run_cycle(parts, clock)
        with parts.state.connect() as connection:
            (held,) = outbox.list_orders(connection, state=OrderState.AWAITING_APPROVAL.value)
    config = _config(tmp_path, state_url, rules, sandbox.url)
    refused = _cli(config, "orders", "approve", held.external_order_id)
    assert refused.returncode == 1
    assert "held by budget 'two-a-month'" in refused.stderr
    assert "2 of 2 orders used" in refused.stderr
    assert "--over-budget --reason TEXT" in refused.stderr
    no_reason = _cli(config, "orders", "approve", held.external_order_id, "--over-budget")
    assert no_reason.returncode == 2
    assert "--over-budget needs --reason" in no_reason.stderr
    (approved,) = _rows(
        _cli(
            config,
            "orders",
            "approve",
            held.external_order_id,
            "--over-budget",
            "--reason",
            "launch week",
            "--format",
            "jsonl",
        )
    )
    assert approved["state"] == "planned"
    story = _rows(_cli(config, "explain", held.external_property_id, "--format", "jsonl"))
    summaries = [row["summary"] for row in story]
    assert any("HELD by budget 'two-a-month'" in s for s in summaries), summaries
    assert any("OVER BUDGET" in s and "launch week" in s for s in summaries), summaries
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            (approval,) = audit.query_events(connection, kinds=[AuditKind.ORDER_APPROVED])
    finally:
        engine.dispose()
    assert approval["detail"]["over_budget_reason"] == "launch week"


def test_check_lists_the_budgets_it_will_enforce(
    tmp_path: Path, state_url: str, rules: Path, pm: PmDatabase
) -> None:
    """`propready check` names each budget with its limits (whatever the vendor's answer)."""
    config = _config(tmp_path, state_url, rules, "http://127.0.0.1:9")
    result = _cli(config, "check")
    assert (
        "    budget two-a-month: 2 orders per month for all entities together, then hold"
        in result.stdout
    ), result.stdout
