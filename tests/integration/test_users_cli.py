"""`propready users ...` and `propready serve` with the console, as an operator runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from propready.adapters.passwords import verify_password
from propready.adapters.store import audit
from propready.adapters.store import console_users as store
from propready.adapters.store.engine import create_state_engine
from propready.service.console_check import console_check_lines
from propready.service.console_users import add_user
from propready.settings import Settings
from propready.wiring import utc_now
from tests.integration.cli_support import run_cli
from tests.integration.daemon_support import free_port, wait_until, write_config

SOURCE = {"url": "sqlite:///pm.db", "query": "SELECT 'H1' AS external_property_id"}
SECRET = "console-session-secret-for-tests-0123456789"


def propready(
    config: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """In this process (fast), except with `stdin` (the password prompt reads the terminal)."""
    if stdin is None:
        capture = _CAPTURE[0]
        capture.readouterr()
        code = run_cli(["--config", str(config), *args])
        out, err = capture.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        input=stdin,
        env={**os.environ, "SUDO_USER": "opal"},
    )


_CAPTURE: list[pytest.CaptureFixture[str]] = []


@pytest.fixture(autouse=True)
def _capture(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SUDO_USER", "opal")
    _CAPTURE[:] = [capsys]
    yield
    _CAPTURE.clear()


def config_for(tmp_path: Path, state_url: str, **console: Any) -> Path:
    sections = {
        "state": {"url": state_url},
        "source": SOURCE,
        "console": {"session_secret": SECRET, **console},
        "log": {"format": "json"},
    }
    return write_config(tmp_path / "propready.toml", sections)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    for needle in needles:
        assert needle in result.stderr


def user(state_url: str, name: str) -> store.ConsoleUser | None:
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            return store.find(connection, name)
    finally:
        engine.dispose()


def audited(state_url: str) -> list[tuple[str, dict[str, Any]]]:
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            rows = audit.query_events(connection)
    finally:
        engine.dispose()
    return [(r["kind"], r["detail"]) for r in rows if str(r["kind"]).startswith("console_")]


def test_users_add_list_passwd_disable_remove_each_audited(tmp_path: Path, state_url: str) -> None:
    config = config_for(tmp_path, state_url)
    password_file = tmp_path / "alice.pw"
    password_file.write_text("first line is the password\nsecond line is not\n")
    added = propready(
        config, "users", "add", "alice", "--role", "approver", "--password-file", str(password_file)
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added alice (approver)"
    alice = user(state_url, "alice")
    assert alice is not None
    assert alice.password_hash is not None
    assert alice.password_hash.startswith("$argon2id$")
    assert verify_password(alice.password_hash, "first line is the password")
    assert not verify_password(alice.password_hash, "second line is not")

    prompted = propready(
        config, "users", "add", "vera", "--role", "viewer", stdin="vera-password-1\n" * 2
    )
    assert prompted.returncode == 0, prompted.stderr
    proxied = propready(
        config, "users", "add", "carol@example.com", "--role", "admin", "--no-password"
    )
    assert proxied.returncode == 0, proxied.stderr

    listed = propready(config, "users", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["role"], r["password"]) for r in rows] == [
        ("alice", "approver", "set"),
        ("carol@example.com", "admin", "none (proxy)"),
        ("vera", "viewer", "set"),
    ]
    assert "argon2" not in listed.stdout

    one_line_error(
        propready(config, "users", "add", "alice", "--role", "viewer", "--no-password"),
        "exists already",
    )
    short = tmp_path / "short.pw"
    short.write_text("short\n")
    one_line_error(
        propready(config, "users", "add", "sam", "--role", "viewer", "--password-file", str(short)),
        "at least 12 characters",
    )
    assert "short" not in propready(config, "users", "list").stdout
    one_line_error(
        propready(config, "users", "add", "bad name", "--role", "viewer", "--no-password"),
        "is not a user name",
    )
    one_line_error(
        propready(
            config, "users", "add", "x", "--role", "viewer", "--password-file", str(tmp_path / "no")
        ),
        "--password-file: cannot read",
    )

    new_password = tmp_path / "new.pw"
    new_password.write_text("a new password for alice")
    changed = propready(config, "users", "passwd", "alice", "--password-file", str(new_password))
    assert changed.returncode == 0, changed.stderr
    alice_after = user(state_url, "alice")
    assert alice_after is not None
    assert alice_after.session_epoch == alice.session_epoch + 1
    assert alice_after.password_hash is not None
    assert verify_password(alice_after.password_hash, "a new password for alice")

    assert propready(config, "users", "disable", "vera").returncode == 0
    vera = user(state_url, "vera")
    assert vera is not None
    assert vera.disabled
    assert propready(config, "users", "enable", "vera").returncode == 0
    assert propready(config, "users", "remove", "vera").returncode == 0
    assert user(state_url, "vera") is None
    one_line_error(propready(config, "users", "remove", "vera"), "no user 'vera'")

    kinds = audited(state_url)
    assert [kind for kind, _ in kinds] == [
        "console_user_added",
        "console_user_added",
        "console_user_added",
        "console_user_password_changed",
        "console_user_disabled",
        "console_user_enabled",
        "console_user_removed",
    ]
    assert all(detail["by"].startswith("opal@") for _, detail in kinds)
    assert "first line is the password" not in json.dumps(kinds)


def test_serve_runs_the_console_alone_and_stops_on_sigterm(tmp_path: Path, state_url: str) -> None:
    port = free_port()
    config = config_for(tmp_path, state_url, listen=f"127.0.0.1:{port}")
    log = tmp_path / "serve.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "propready", "--config", str(config), "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def listening() -> bool:
            assert process.poll() is None, log.read_text()
            return '"serve_listening"' in log.read_text()

        wait_until("serve to listen", listening)
        text = log.read_text()
        assert f"http://127.0.0.1:{port}" in text
        assert SECRET not in text
        page = httpx.get(f"http://127.0.0.1:{port}/login", timeout=10)
        assert page.status_code == 200
        assert re.search(r'name="csrf_token" value="[^"]+"', page.text)
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        # uvicorn's own X-Forwarded-* handling is off on this listener: the header of an
        # untrusted peer changes nothing.
        forwarded = httpx.get(
            f"http://127.0.0.1:{port}/login", headers={"X-Forwarded-Proto": "https"}, timeout=10
        )
        assert "Secure" not in forwarded.headers["set-cookie"]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()


def test_a_console_user_table_is_what_migrations_make(state_url: str) -> None:
    """The role check is in the database too: an unknown role cannot be stored."""
    engine = create_state_engine(state_url)
    try:
        with engine.begin() as connection:
            statement = sa.text(
                "INSERT INTO console_user (name, role, disabled, session_epoch, created_at, "
                "updated_at) VALUES ('x', 'root', false, 0, '2026-12-01', '2026-12-01')"
            )
            try:
                connection.execute(statement)
            except sa.exc.IntegrityError:
                refused = True
            else:
                refused = False
        assert refused
    finally:
        engine.dispose()


def test_check_says_whether_anybody_can_log_in_to_the_console(state_url: str) -> None:
    """`propready check`'s console line: FAIL without a usable user, PASS with one, WARN when
    it listens beyond loopback; nothing when the console is off."""
    engine = create_state_engine(state_url)
    now = utc_now()

    def lines(**console: Any) -> list[tuple[str, bool | None, str]]:
        settings = Settings(
            state={"url": state_url},
            source=SOURCE,
            console={"session_secret": SECRET, **console},
        )
        return console_check_lines(settings)

    try:
        assert lines() == []
        [empty] = lines(listen="127.0.0.1:8720")
        assert empty[1] is False
        assert "propready users add NAME --role approver" in empty[2]
        add_user(engine, "proxied", "viewer", None, by="test", now=now)
        [still] = lines(listen="127.0.0.1:8720")  # no password: cannot log in with one
        assert still[1] is False
        [proxy] = lines(listen="127.0.0.1:8720", auth="proxy", trusted_proxies=["127.0.0.1"])
        assert proxy[1] is True
        add_user(engine, "alice", "approver", "alice-approves-1", by="test", now=now)
        [ok] = lines(listen="127.0.0.1:8720")
        assert ok == ("console", True, "on 127.0.0.1:8720, auth password, users: 1 approver(s)")
        exposed = lines(listen="0.0.0.0:8720")
        assert [line[1] for line in exposed] == [True, None]
        assert "reachable beyond this host" in exposed[1][2]
    finally:
        engine.dispose()
