"""`propready attention`, `notify test`, `check` and `run --once` as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, outbox
from propready.adapters.store.engine import create_state_engine
from propready.service import run_cycle
from tests.integration.cycle_support import (
    QUERY,
    REPO,
    Clock,
    PmDatabase,
    home,
    make_settings,
    wired,
)
from tests.integration.notify_support import JsonReceiver, free_port


@pytest.fixture
def receiver() -> Iterator[JsonReceiver]:
    server = JsonReceiver()
    yield server
    server.close()


def cli(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def write_config(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer, notify: str = ""
) -> Path:
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "{state_url}"\n'
        f'[source]\nurl = "{pm.url}"\nquery = "{QUERY}"\ntimezone = "America/Denver"\n'
        f'[rules]\npath = "{REPO / "rules"}"\n'
        f'[orders]\nmode = "approval"\n'
        f'[planomatic]\nbase_url = "{sandbox.url}"\napi_key = "sandbox-key"\n'
        "requests_per_minute = 6000\n"
        '[log]\nformat = "json"\n'
        f"[notify]\n{notify}\n"
    )
    return config


def waiting_orders(state_url: str, pm: PmDatabase, sandbox: SandboxServer) -> dict[str, str]:
    """Two homes ready in approval mode, one PM row that cannot be typed: what waits."""
    clock = Clock()
    settings = make_settings(state_url, pm.url, sandbox.url, mode="approval")
    pm.insert(home("H3", beds="lots"))
    with wired(settings) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        pm.set("H2", status="Vacant Unrented Ready")
        clock.now += timedelta(minutes=5)
        run_cycle(parts, clock)
        with parts.state.connect() as connection:
            rows = outbox.list_orders(connection)
    return {row.external_property_id: row.external_order_id for row in rows}


def listed(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    items = json.loads(result.stdout)
    assert isinstance(items, list)
    return items


def test_attention_lists_what_waits_oldest_first_and_exits_1_when_overdue(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """Approvals and a quarantined row, one JSON array, each with age, home, action and command;
    exit 1 when an item is older than its threshold, 0 when none is."""
    ids = waiting_orders(state_url, pm, sandbox)
    config = write_config(tmp_path, state_url, pm, sandbox)
    result = cli(config, "attention", "--format", "json")
    assert result.returncode == 1, result.stderr  # made days ago: overdue
    items = listed(result)
    assert [item["kind"] for item in items] == ["quarantined", "approval", "approval"]
    quarantined, first, _second = items
    assert quarantined["item"] == "quarantined:H3"
    assert quarantined["home"] == "H3"
    assert "column bedrooms" in quarantined["what"]
    assert quarantined["command"] == "propready audit --property H3 --kind source_row_quarantined"
    assert first["item"] == f"approval:{ids[first['home']]}"
    assert first["command"] == f"propready orders approve {ids[first['home']]}"
    assert first["overdue"] is True
    assert first["age_seconds"] > 0
    patient = write_config(
        tmp_path,
        state_url,
        pm,
        sandbox,
        "overdue_after_hours = {approval = 9999, quarantined = 9999}",
    )
    relaxed = cli(patient, "attention")
    assert relaxed.returncode == 0, relaxed.stderr
    header, *lines = relaxed.stdout.splitlines()
    assert header == "3 item(s) waiting for a person, oldest first:"
    assert lines[0].split("quarantined:H3", 1)[1].split()[:3] == ["H3", "column", "bedrooms:"]
    approval = lines[1].split("approval:", 1)[1].split()
    order, home_id = approval[0], approval[1]
    assert ids[home_id] == order
    assert lines[1].endswith(f"approve it (or cancel it): propready orders approve {order}")


def test_ack_and_snooze_hide_items_with_an_audited_reason(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """An acknowledged and a snoozed item leave the list (and the exit code), stay visible with
    --all, and both actions are in the audit log with their reason."""
    ids = waiting_orders(state_url, pm, sandbox)
    config = write_config(tmp_path, state_url, pm, sandbox)
    env = {"SUDO_USER": "pat"}
    acked = cli(
        config, "attention", "ack", "quarantined:H3", "--reason", "PM fix on Monday", env=env
    )
    assert acked.returncode == 0, acked.stderr
    assert acked.stdout.strip() == "acknowledged quarantined:H3; it shows again when it changes"
    for home_id in ("H1", "H2"):
        snoozed = cli(
            config,
            "attention",
            "snooze",
            f"approval:{ids[home_id]}",
            "--for",
            "4h",
            "--reason",
            "waiting for the owner",
            env=env,
        )
        assert snoozed.returncode == 0, snoozed.stderr
    quiet = cli(config, "attention", "--format", "json")
    assert quiet.returncode == 0, quiet.stderr
    assert listed(quiet) == []
    everything = listed(cli(config, "attention", "--all", "--format", "json"))
    assert len(everything) == 3
    silenced = sorted(item["silenced"] for item in everything)
    assert silenced[0] == "acknowledged by pat: PM fix on Monday"
    assert all(text.startswith("snoozed until ") for text in silenced[1:])
    assert all(text.endswith("Z by pat: waiting for the owner") for text in silenced[1:])
    missing = cli(config, "attention", "ack", "unknown:pr-nope", "--reason", "x")
    assert missing.returncode == 1
    assert "no attention item 'unknown:pr-nope' now" in missing.stderr
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            rows = audit.query_events(
                connection, kinds=["attention_acknowledged", "attention_snoozed"]
            )
    finally:
        engine.dispose()
    assert [row["kind"] for row in rows] == [
        "attention_acknowledged",
        "attention_snoozed",
        "attention_snoozed",
    ]
    assert rows[0]["detail"] == {
        "item": "quarantined:H3",
        "reason": "PM fix on Monday",
        "by": "pat",
    }


def test_notify_test_reports_each_channel_in_one_line(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer, receiver: JsonReceiver
) -> None:
    """One `ok` line per working channel and one `FAIL` line with the reason per broken one, the
    mail password masked; exit 1 because one failed. URLs come from the credential file."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    dead = free_port()
    (credentials / "notify__urls").write_text(
        f"{receiver.url()}\n"
        f"mailto://alice:hunter2-secret@example.com?smtp=127.0.0.1&port={dead}&to=ops@example.com\n"
    )
    config = write_config(tmp_path, state_url, pm, sandbox)
    result = cli(config, "notify", "test", env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"ok    json://127.0.0.1:{receiver.port}/hook"
    assert lines[1].startswith(f"FAIL  mailto://alice:****@example.com:{dead}/ops%40example.com: ")
    assert len(lines) == 2
    assert "hunter2-secret" not in result.stdout + result.stderr
    [message] = receiver.received
    assert message["title"] == "propready: test notification"


def test_a_malformed_apprise_url_is_a_one_line_config_error_without_the_secret(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer, receiver: JsonReceiver
) -> None:
    """A URL apprise cannot use stops every command with one line naming its position and
    scheme, exit 2, no traceback, and never the URL's secret."""
    config = write_config(
        tmp_path,
        state_url,
        pm,
        sandbox,
        f'urls = ["{receiver.url()}", "mailto://bob:t0p-secret-pw@"]',
    )
    result = cli(config, "check")
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"propready: config error: {config}:")
    assert "notify.urls" in line
    assert "entry 2 (scheme mailto) is not a URL apprise can use" in line
    assert "t0p-secret-pw" not in result.stderr
    assert "Traceback" not in result.stderr


def test_run_once_tells_people_and_check_passes_the_urls(
    tmp_path: Path, state_url: str, pm: PmDatabase, sandbox: SandboxServer, receiver: JsonReceiver
) -> None:
    """`run --once` notifies due facts (orders awaiting approval), and `check` lists the channel."""
    config = write_config(
        tmp_path, state_url, pm, sandbox, f'urls = ["{receiver.url()}"]\ngroup_wait_seconds = 0'
    )
    assert cli(config, "db", "upgrade").returncode == 0
    first = cli(config, "run", "--once")
    assert first.returncode == 0, first.stderr
    pm.set("H1", status="Vacant Unrented Ready")
    second = cli(config, "run", "--once")
    assert second.returncode == 0, second.stderr
    [message] = [m for m in receiver.received if "approval" in m["title"]]
    assert message["title"] == "propready: 1 order waits for approval"
    assert "(H1)" in message["message"]
    checked = cli(config, "check")
    assert f"PASS notify: 1 channel(s): json://127.0.0.1:{receiver.port}/hook" in checked.stdout
