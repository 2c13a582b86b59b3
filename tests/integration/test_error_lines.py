"""Every command answers every operator mistake in one line naming the setting, never a
traceback (the walk and the table of lines are in tests/tools/error_lines.py)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine
from tests.tools.error_lines import COMMANDS, Answer, all_commands, environment, table, walk


def test_every_command_is_walked() -> None:
    """A command added to the CLI fails here until the walk knows which settings it uses."""
    assert sorted(all_commands()) == sorted(COMMANDS)


@pytest.mark.slow
def test_every_mistake_is_answered_in_one_line_naming_the_setting(tmp_path: Path) -> None:
    """Unreachable, refused and malformed database URLs, an unreachable or wrong vendor, busy
    ports and missing files: one line naming what and where, a non-zero exit, no traceback."""
    with environment(tmp_path) as env:
        answers: list[Answer] = list(walk(env))
    assert len(answers) > 200  # 24 mistakes times the commands each one concerns
    failures = [
        f"{a.command} / {a.mistake.key}: {'; '.join(a.problems())}: {a.lines or a.stderr[-300:]}"
        for a in answers
        if a.problems()
    ]
    assert failures == [], "\n".join(failures)
    assert "| state.url: `postgres://...` |" in table(answers)


def test_an_unexpected_error_is_one_line_with_the_traceback_in_the_log(tmp_path: Path) -> None:
    """A failure no handler expects (a state database someone broke by hand) exits 1 with one
    line on stderr; the traceback is in the log, at error level, not on the terminal."""
    state = tmp_path / "state.db"
    engine = create_state_engine(f"sqlite:///{state}")
    migrate.upgrade(engine)
    engine.dispose()
    with sqlite3.connect(state) as connection:
        connection.execute("DROP TABLE orders")
    connection.close()
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///{state}"\n'
        f'[source]\nurl = "sqlite:///{tmp_path / "pm.db"}"\nquery = "SELECT 1"\n'
        '[log]\nformat = "json"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), "orders", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    said = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert said == [
        "propready: unexpected error: OperationalError: (sqlite3.OperationalError) no such "
        "table: orders (see the log)"
    ]
    (logged,) = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    assert (logged["event"], logged["level"]) == ("unexpected_error", "error")
    assert logged["exception"][0]["exc_type"] == "OperationalError"
    assert "Traceback" not in result.stderr


def test_report_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    """`report --out` into a folder that does not exist names the option and the file."""
    state = tmp_path / "state.db"
    engine = create_state_engine(f"sqlite:///{state}")
    migrate.upgrade(engine)
    engine.dispose()
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///{state}"\n'
        f'[source]\nurl = "sqlite:///{tmp_path / "pm.db"}"\nquery = "SELECT 1"\n'
    )
    out = tmp_path / "missing" / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), "report", "--since",
         "2026-01-01", "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == f"propready: --out: cannot write {out} (No such file or directory)\n"
