"""The command line as a user meets it: help with examples, clear errors, a real run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import click
import pytest

from propready.cli.main import cli
from tests.integration.cycle_support import QUERY, REPO, PmDatabase, home


def _all_commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


def propready(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propready", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_every_command_documents_an_example() -> None:
    """`propready --help` and every subcommand's help show at least one example."""
    commands = [((), cli), *_all_commands(cli)]
    assert len(commands) > 10
    for path, command in commands:
        with click.Context(command, info_name=" ".join(("propready", *path))) as ctx:
            text = command.get_help(ctx)
        assert "Example" in text, f"`propready {' '.join(path)} --help` has no example"


def test_malformed_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A config that is not TOML prints one line naming the file, and exits 2 with no traceback."""
    config = tmp_path / "propready.toml"
    config.write_text("[source\nurl = 1\n")
    result = propready("--config", str(config), "run", "--once")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert str(config) in result.stderr
    assert "not valid TOML" in result.stderr


def test_unknown_key_is_named_with_its_line(tmp_path: Path) -> None:
    """A typo in a key names file:line and the key, exit 2."""
    config = tmp_path / "propready.toml"
    config.write_text(f'[source]\nurl = "sqlite:///pm.db"\nquery = "{QUERY}"\npoll_intervall = 5\n')
    result = propready("--config", str(config), "check")
    assert result.returncode == 2
    assert f"{config}:4: source.poll_intervall: unknown key" in result.stderr


def test_rules_check_lists_every_problem_and_fails(tmp_path: Path) -> None:
    """`rules check` prints each problem with file:line and exits 1."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "triggers:\n  t: property.x ==\nrules:\n  - id: r\n    triggered_by: [nope]\n    services: [{slug: photos, quantity: 25}]\n"
    )
    result = propready("rules", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:2: trigger 't': CEL syntax error" in result.stderr
    assert f"{bad}:5: rule 'r': unknown trigger 'nope'" in result.stderr
    good = propready("rules", "check", str(REPO / "rules"))
    assert good.returncode == 0
    assert good.stdout.startswith("OK: 2 triggers")


@pytest.fixture
def sandbox_url(tmp_path: Path) -> Iterator[str]:
    url_file = tmp_path / "sandbox.url"
    process = subprocess.Popen(
        [sys.executable, "-m", "propready", "sandbox", "--port", "0", "--url-file", str(url_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not (url_file.exists() and url_file.read_text()):
        assert time.monotonic() < deadline, "sandbox did not start in time"
        assert process.poll() is None, "sandbox exited"
        time.sleep(0.05)
    yield url_file.read_text().strip()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def test_run_once_end_to_end_on_postgresql(
    tmp_path: Path, pg_database: str, sandbox_url: str
) -> None:
    """db upgrade, check, two `run --once` cycles and `orders list` against PostgreSQL state."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"), home("H2"))
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "{pg_database.replace("postgresql://", "postgresql+psycopg://")}"\n'
        f'[source]\nurl = "sqlite:///pm.db"\nquery = "{QUERY}"\n'
        f'[rules]\npath = "{REPO / "rules"}"\n'
        f'[planomatic]\nbase_url = "{sandbox_url}"\nrequests_per_minute = 600\n'
        '[log]\nformat = "json"\n'
    )
    env = {"PROPREADY_CONFIG": str(config), "PROPREADY_PLANOMATIC__API_KEY": "sandbox-key"}
    not_migrated = propready("run", "--once", env=env)
    assert not_migrated.returncode == 1
    assert "propready db upgrade" in not_migrated.stderr
    assert propready("db", "upgrade", env=env).returncode == 0
    check = propready("check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASS") == 10
    assert "PASS notify: no urls: notifications are off" in check.stdout
    assert "PASS writeback: no url: write-back is off" in check.stdout
    assert propready("run", "--once", env=env).returncode == 0
    pm.set("H2", status="Vacant Unrented Ready")
    pm.close()
    second = propready("run", "--once", env=env)
    assert second.returncode == 0, second.stderr
    assert "sandbox-key" not in second.stdout
    assert "7391" not in second.stdout
    listed = propready("orders", "list", "--format", "csv", env=env)
    rows = listed.stdout.strip().splitlines()
    assert len(rows) == 2
    assert ",H2,placed," in rows[1]
    explained = propready("explain", "H2", "--format", "jsonl", env=env)
    assert '"kind": "order_placed"' in explained.stdout


def test_check_fails_when_the_vendor_rejects_the_key(tmp_path: Path, sandbox_url: str) -> None:
    """`check` reports a key the vendor does not accept, and exits 1."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.close()
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///state.db"\n[source]\nurl = "sqlite:///pm.db"\nquery = "{QUERY}"\n'
        f'[rules]\npath = "{REPO / "rules"}"\n[planomatic]\nbase_url = "{sandbox_url}"\napi_key = "wrong-key"\n'
    )
    assert propready("--config", str(config), "db", "upgrade").returncode == 0
    result = propready("--config", str(config), "check")
    assert result.returncode == 1
    assert "FAIL vendor: " in result.stdout
    assert "refuses the API key (api_key: unauthorized)" in result.stdout


def _wait_for_first_poll(state_db: Path, timeout: float = 60) -> None:
    """Block until the daemon has stored its first poll (a fixed sleep is flaky under load)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state_db.exists():
            with closing(sqlite3.connect(state_db, timeout=10)) as connection:
                try:
                    if connection.execute("SELECT count(*) FROM property_state").fetchone()[0]:
                        return
                except sqlite3.OperationalError:
                    pass  # not migrated yet, or busy
        time.sleep(0.2)
    pytest.fail("the daemon did not complete its first poll")


def test_daemon_runs_cycles_and_stops_on_sigterm(tmp_path: Path, sandbox_url: str) -> None:
    """`propready run` polls on its interval, orders a home that became ready, exits 0 on SIGTERM."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"))
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///state.db"\n'
        f'[source]\nurl = "sqlite:///pm.db"\nquery = "{QUERY}"\npoll_interval_seconds = 1\n'
        f'[rules]\npath = "{REPO / "rules"}"\n'
        f'[planomatic]\nbase_url = "{sandbox_url}"\napi_key = "sandbox-key"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n[log]\nformat = "json"\n'
    )
    assert propready("--config", str(config), "db", "upgrade").returncode == 0
    daemon = subprocess.Popen(
        [sys.executable, "-m", "propready", "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_first_poll(tmp_path / "state.db")  # it remembers H1 as not ready
        pm.set("H1", status="Vacant Unrented Ready")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listed = propready("--config", str(config), "orders", "list", "--format", "csv")
            if ",H1,placed," in listed.stdout:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the daemon did not place the order")
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
        pm.close()
    assert daemon.returncode == 0, err
    assert '"event": "stopped"' in out
    assert '"event": "cycle"' in out


def test_a_failing_source_shows_in_run_once_and_check(tmp_path: Path, sandbox_url: str) -> None:
    """`run --once` exits 1 with the driver's reason; `check` reports the failed poll."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.close()
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///state.db"\n[source]\nurl = "sqlite:///pm.db"\nquery = "{QUERY}"\n'
        f'[rules]\npath = "{REPO / "rules"}"\n[planomatic]\nbase_url = "{sandbox_url}"\napi_key = "sandbox-key"\n'
    )
    assert propready("--config", str(config), "db", "upgrade").returncode == 0
    with sqlite3.connect(tmp_path / "pm.db") as connection:
        connection.execute("DROP TABLE homes")
    connection.close()
    run = propready("--config", str(config), "run", "--once")
    assert run.returncode == 1
    assert "source query failed" in run.stderr
    assert "no such table: homes" in run.stderr
    check = propready("--config", str(config), "check")
    assert check.returncode == 1
    assert "FAIL polls: 1 failed in a row; last: source query failed" in check.stdout
