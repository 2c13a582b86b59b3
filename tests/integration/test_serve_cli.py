"""`propready serve` and `propready webhooks` as processes: start-up errors, SIGTERM, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from propready.adapters.store import deliveries, migrate
from propready.adapters.store.engine import create_state_engine
from propready.service.webhook_intake import store_delivery
from propready.wiring import utc_now
from tests.integration.daemon_support import free_port, wait_until, write_config
from tests.integration.webhook_support import TOKEN, WEBHOOK_PATH, delivery

SOURCE = {"url": "sqlite:///pm.db", "query": "SELECT 'H1' AS external_property_id"}


def propready(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def serve_config(tmp_path: Path, state_url: str, port: int, **webhooks: Any) -> Path:
    sections = {
        "state": {"url": state_url},
        "source": SOURCE,
        "webhooks": {"listen": f"127.0.0.1:{port}", "token": TOKEN, **webhooks},
        "log": {"format": "json"},
    }
    return write_config(tmp_path / "propready.toml", sections)


class ServeProcess:
    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "propready", "--config", str(config), "serve"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == name:
                found.append(entry)
        return found

    def wait_listening(self) -> str:
        def check() -> str | None:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited {self.process.returncode}: {self.log.read_text()}")
            listening = self.events("serve_listening")
            return str(listening[0]["webhooks"]) if listening else None

        url: str = wait_until("serve to listen", check)
        return url

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def sqlite_state(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = create_state_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().count("\n") == 0, result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_serve_refuses_to_start_with_nothing_to_serve(tmp_path: Path, sqlite_state: str) -> None:
    """No [webhooks] listen (and no console): one line, exit 2."""
    config = write_config(
        tmp_path / "propready.toml", {"state": {"url": sqlite_state}, "source": SOURCE}
    )
    _one_line_error(propready(config, "serve"), 2, "nothing to serve", "[webhooks] listen")


def test_serve_without_a_config_file_is_one_line(tmp_path: Path) -> None:
    """A missing config file: one line naming it, exit 2."""
    missing = tmp_path / "nowhere.toml"
    _one_line_error(propready(missing, "serve"), 2, str(missing), "not found")


def test_serve_with_an_unreachable_state_database_is_one_line(tmp_path: Path) -> None:
    """A PostgreSQL URL where nothing listens: `state.url: cannot connect to ...`, exit 1."""
    port = free_port()
    config = serve_config(
        tmp_path, f"postgresql+psycopg://root:pw@127.0.0.1:{port}/state", free_port()
    )
    result = propready(config, "serve")
    _one_line_error(result, 1, f"state.url: cannot connect to 127.0.0.1:{port}", "refused")
    assert "pw" not in result.stderr


def test_serve_on_a_busy_port_is_one_line(tmp_path: Path, sqlite_state: str) -> None:
    """The webhook port already taken: `webhooks.listen: cannot listen on ...`, exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = propready(serve_config(tmp_path, sqlite_state, port), "serve")
    _one_line_error(
        result, 1, f"webhooks.listen: cannot listen on 127.0.0.1:{port}", "address already in use"
    )


def test_serve_on_an_unmigrated_database_says_to_upgrade(tmp_path: Path) -> None:
    """A state database without the schema: one line pointing at `propready db upgrade`."""
    config = serve_config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}", free_port())
    _one_line_error(propready(config, "serve"), 1, "propready db upgrade")


def test_serve_stores_deliveries_and_stops_on_sigterm(tmp_path: Path, sqlite_state: str) -> None:
    """The real command: listens, stores, logs without the token, exits 0 on SIGTERM."""
    config = serve_config(tmp_path, sqlite_state, free_port())
    serve = ServeProcess(config, tmp_path / "serve.log")
    try:
        url = serve.wait_listening()
        response = httpx.post(f"{url}{WEBHOOK_PATH}/{TOKEN}", content=delivery(100001, "ordered"))
        assert response.status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert serve.stop() == 0
    finally:
        serve.kill()
    log = (tmp_path / "serve.log").read_text()
    assert TOKEN not in log
    assert '"outcome": "stored"' in log
    assert serve.events("serve_stopped")


@pytest.mark.parametrize("crash_at", ["delivery_before_commit", "delivery_after_commit"])
def test_sigkill_mid_delivery_loses_nothing_and_stores_it_once(
    tmp_path: Path, sqlite_state: str, crash_at: str
) -> None:
    """SIGKILL before or after the commit: the vendor got no 2xx and retries after the restart;
    the delivery ends up stored exactly once."""
    port = free_port()
    config = serve_config(tmp_path, sqlite_state, port)
    body = delivery(100001, "scheduled", "2026-12-01T10:00:00Z")
    doomed = ServeProcess(config, tmp_path / "doomed.log", env={"PROPREADY_CRASH_AT": crash_at})
    try:
        url = doomed.wait_listening()
        with pytest.raises(httpx.TransportError):  # killed before it could answer
            httpx.post(f"{url}{WEBHOOK_PATH}/{TOKEN}", content=body, timeout=10)
        assert doomed.process.wait(timeout=10) == -signal.SIGKILL
    finally:
        doomed.kill()
    serve = ServeProcess(config, tmp_path / "serve.log")
    try:
        url = serve.wait_listening()
        retry = httpx.post(f"{url}{WEBHOOK_PATH}/{TOKEN}", content=body, timeout=10)
        expected = "stored" if crash_at == "delivery_before_commit" else "duplicate"
        assert retry.json()["status"] == expected
        assert serve.stop() == 0
    finally:
        serve.kill()
    engine = create_state_engine(sqlite_state)
    try:
        with engine.connect() as connection:
            rows = deliveries.list_deliveries(connection)
    finally:
        engine.dispose()
    assert [(row.vendor_order_id, row.order_status) for row in rows] == [("100001", "scheduled")]


def test_webhooks_list_show_and_replay(tmp_path: Path, sqlite_state: str) -> None:
    """list filters by state and prints json/csv; show prints the masked body; replay counts."""
    engine = create_state_engine(sqlite_state)

    try:
        store_delivery(
            engine, delivery(100001, "ordered", property_access={"access_code": "4711"}), utc_now()
        )
        store_delivery(engine, b"garbage", utc_now())
        with engine.begin() as connection:
            deliveries.mark_applied(connection, 1, utc_now())
    finally:
        engine.dispose()
    config = write_config(
        tmp_path / "propready.toml", {"state": {"url": sqlite_state}, "source": SOURCE}
    )

    malformed = propready(config, "webhooks", "list", "--state", "malformed", "--format", "jsonl")
    assert malformed.returncode == 0, malformed.stderr
    (line,) = malformed.stdout.splitlines()
    assert json.loads(line)["state"] == "malformed"

    everything = propready(config, "webhooks", "list", "--format", "csv")
    assert everything.stdout.splitlines()[0].startswith("id,received_at,state,event")
    assert len(everything.stdout.splitlines()) == 3

    shown = propready(config, "webhooks", "show", "1")
    assert shown.returncode == 0
    assert '"access_code": "***"' in shown.stdout
    assert "4711" not in shown.stdout

    assert propready(config, "webhooks", "show", "99").returncode == 1
    assert propready(config, "webhooks", "replay").returncode == 2
    replayed = propready(config, "webhooks", "replay", "--id", "1")
    assert replayed.stdout.strip() == "1 deliveries will be applied again"
    since = propready(config, "webhooks", "replay", "--since", "2000-01-01")
    assert since.stdout.strip() == "0 deliveries will be applied again"  # 1 pending, 2 malformed
