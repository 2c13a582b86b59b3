"""A real `propready run` under the conditions production brings.

systemd's notify socket (emulated with a datagram socket), SIGTERM during a send and during a
rate-limit wait, SIGHUP with good and bad config files, the metrics and health endpoints, and a
state database that drops its connections.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from tests.integration.cycle_support import API_KEY, QUERY, REPO, PmDatabase, home
from tests.integration.daemon_support import (
    DaemonProcess,
    PrivatePostgres,
    audit_kinds,
    free_port,
    orders_by_state,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.slow


def _sandbox(**overrides: Any) -> SandboxServer:
    base = SandboxConfig.default()
    return SandboxServer(SandboxConfig(api_keys=base.api_keys, catalog=base.catalog, **overrides))


def _sections(
    tmp_path: Path, state_url: str, sandbox_url: str, **extra: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "state": {"url": state_url},
        "source": {"url": f"sqlite:///{tmp_path / 'pm.db'}", "query": QUERY},
        "rules": {"path": REPO / "rules"},
        "orders": {"mode": "live"},
        "planomatic": {
            "base_url": sandbox_url,
            "api_key": API_KEY,
            "requests_per_minute": 600,
            "timeout_seconds": 5,
        },
        "daemon": {"send_interval_seconds": 0.5, "recovery_interval_seconds": 1},
        "metrics": {"listen": "127.0.0.1:0"},
        "log": {"format": "json"},
    }
    sections["source"]["poll_interval_seconds"] = 1
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    return sections


def _migrate(config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _run_once(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    yield database
    database.close()


def _polled(daemon: DaemonProcess, after: float = 0.0) -> dict[str, Any]:
    """The next completed (not skipped) poll logged after `after` (a time.time() value)."""

    def done(event: dict[str, Any]) -> bool:
        return (
            event.get("job") == "poll"
            and not event.get("poll_skipped")
            and _at(event) > after
            and not event.get("error")
        )

    return daemon.wait_for("cycle", done)


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


class NotifyListener:
    """An emulated systemd: a datagram socket that records every notify message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65536)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.arrivals.append(time.monotonic())
            self.messages.append(fields)

    def pings_between(self, start: float, end: float) -> int:
        return sum(
            1
            for at, message in zip(self.arrivals, self.messages, strict=False)
            if start <= at <= end and "WATCHDOG" in message
        )

    def first_index(self, key: str, value: str | None = None, start: int = 0) -> int | None:
        for index, message in enumerate(self.messages[start:], start):
            if key in message and (value is None or message[key] == value):
                return index
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()


def test_systemd_hears_ready_status_watchdog_reloading_and_stopping(
    tmp_path: Path, pm: PmDatabase
) -> None:
    """READY=1 only after recovery settled an abandoned send; then STATUS, WATCHDOG, RELOADING,
    READY again, STOPPING, and exit 0."""
    pm.insert(home("H1"))
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with _sandbox() as sandbox:
        config = write_config(
            tmp_path / "propready.toml",
            _sections(tmp_path, state_url, sandbox.url, daemon={"instance_name": "notify-test"}),
        )
        _migrate(config)
        # An earlier process died between its lease and its POST: recovery must settle it.
        assert _run_once(config).returncode == 0
        pm.set("H1", status="Vacant Unrented Ready")
        crashed = _run_once(config, {"PROPREADY_CRASH_AT": "after_lease"})
        assert crashed.returncode == -signal.SIGKILL
        assert orders_by_state(state_url) == {"sending": 1}

        listener = NotifyListener(tmp_path / "notify.sock")
        states_at_ready: list[dict[str, int]] = []
        daemon = DaemonProcess(
            config,
            tmp_path / "daemon.log",
            env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1500000"},
        )
        try:
            daemon.start()
            wait_until("READY=1", lambda: listener.first_index("READY", "1") is not None)
            states_at_ready.append(orders_by_state(state_url))
            wait_until("a STATUS after a poll", lambda: listener.first_index("STATUS") is not None)
            wait_until(
                "watchdog pings",
                lambda: sum("WATCHDOG" in m for m in listener.messages) >= 3,
                timeout=10,
            )
            daemon.signal(signal.SIGHUP)
            reloading = wait_until(
                "RELOADING=1", lambda: listener.first_index("RELOADING", "1"), timeout=15
            )
            wait_until(
                "READY=1 after the reload",
                lambda: listener.first_index("READY", "1", start=reloading) is not None,
            )
            assert int(listener.messages[reloading]["MONOTONIC_USEC"]) > 0
            assert daemon.stop() == 0
            wait_until("STOPPING=1", lambda: listener.first_index("STOPPING", "1") is not None)
        finally:
            daemon.kill()
            listener.close()
    # The abandoned order was settled before READY (no vendor protection: unknown, not re-sent).
    assert states_at_ready[0] == {"unknown": 1}
    assert not any("WATCHDOG" in m for m in listener.messages[: listener.first_index("READY")])
    assert '"event": "stopped"' in daemon.log_path.read_text()


def test_the_watchdog_goes_quiet_while_no_job_can_finish_and_resumes_after(
    tmp_path: Path, pm: PmDatabase
) -> None:
    """Another process holds the state database's write lock: every job blocks, the WATCHDOG=1
    pings stop after watchdog_stall_seconds (systemd would restart it), and resume once the
    lock is released."""
    pm.insert(home("H1"))
    state_path = tmp_path / "state.db"
    with _sandbox() as sandbox:
        sections = _sections(
            tmp_path, f"sqlite:///{state_path}", sandbox.url, daemon={"watchdog_stall_seconds": 2}
        )
        config = write_config(tmp_path / "propready.toml", sections)
        _migrate(config)
        listener = NotifyListener(tmp_path / "notify.sock")
        daemon = DaemonProcess(
            config,
            tmp_path / "daemon.log",
            env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1500000"},
        )
        blocker = sqlite3.connect(state_path, isolation_level=None, timeout=30)
        try:
            daemon.start()
            _polled(daemon)
            blocked_at = time.monotonic()
            blocker.execute("BEGIN EXCLUSIVE")
            time.sleep(7)
            released_at = time.monotonic()
            blocker.execute("ROLLBACK")
            wait_until(
                "pings after the release",
                lambda: listener.pings_between(released_at, time.monotonic()) > 0,
                timeout=15,
            )
            assert daemon.stop() == 0
        finally:
            blocker.close()
            daemon.kill()
            listener.close()
    # Before the lock: pings. From stall limit + a heartbeat after it: none until the release.
    assert listener.pings_between(blocked_at - 5, blocked_at) > 0
    assert listener.pings_between(blocked_at + 3.5, released_at) == 0
    assert daemon.events("watchdog_starved")


def test_sigterm_during_a_send_finishes_it_and_exits_0(tmp_path: Path, pm: PmDatabase) -> None:
    """The request in flight completes and is recorded as placed; nothing is left `sending`."""
    pm.insert(home("H1"))
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with _sandbox(latency_seconds=2.0) as sandbox:
        config = write_config(
            tmp_path / "propready.toml", _sections(tmp_path, state_url, sandbox.url)
        )
        _migrate(config)
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            started = time.time()
            _polled(daemon)
            pm.set("H1", status="Vacant Unrented Ready")
            wait_until("the send to start", lambda: audit_kinds(state_url, "order_sending"))
            daemon.signal(signal.SIGTERM)
            assert daemon.process is not None
            assert daemon.process.wait(timeout=30) == 0, daemon.tail()
        finally:
            daemon.kill()
        assert time.time() - started < 40
        assert orders_by_state(state_url) == {"placed": 1}
        assert len(sandbox.orders) == 1
    assert daemon.events("stopping")
    assert daemon.events("stopped")


def test_a_send_outlasting_the_stop_timeout_is_left_to_recovery(
    tmp_path: Path, pm: PmDatabase
) -> None:
    """The vendor saved the order but never answers: after stop_timeout_seconds the daemon exits
    1 with the order still leased, and the next run settles it without a second vendor order."""
    pm.insert(home("H1"))
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with _sandbox(stall_seconds=20, duplicate_threshold_hours=24) as sandbox:
        sections = _sections(
            tmp_path,
            state_url,
            sandbox.url,
            daemon={"stop_timeout_seconds": 1, "lease_seconds": 30},
        )
        sections["planomatic"].update(timeout_seconds=15, vendor_duplicate_protection_hours=24)
        config = write_config(tmp_path / "propready.toml", sections)
        _migrate(config)
        sandbox.inject("create", "stall")
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            _polled(daemon)
            pm.set("H1", status="Vacant Unrented Ready")
            wait_until("the vendor to hold the request", lambda: len(sandbox.orders) == 1)
            stopping_at = time.monotonic()
            daemon.signal(signal.SIGTERM)
            assert daemon.process is not None
            assert daemon.process.wait(timeout=30) == 1
            assert time.monotonic() - stopping_at < 10
        finally:
            daemon.kill()
        assert daemon.events("stop_timeout")
        assert orders_by_state(state_url) == {"sending": 1}
        # The next run sees the dead sender, re-sends under the vendor's duplicate protection and
        # takes the vendor's "duplicate" as proof the first attempt was saved.
        assert _run_once(config).returncode == 0
        assert orders_by_state(state_url) == {"placed": 1}
        assert len(sandbox.orders) == 1


def test_sigterm_while_waiting_for_a_rate_limit_slot_parks_the_order(
    tmp_path: Path, pm: PmDatabase
) -> None:
    """The second order waits ~30 s for its slot; SIGTERM parks it unsent and the next run
    sends it."""
    pm.insert(home("H1"), home("H2"))
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with _sandbox() as sandbox:
        sections = _sections(tmp_path, state_url, sandbox.url)
        sections["planomatic"]["requests_per_minute"] = 2
        config = write_config(tmp_path / "propready.toml", sections)
        _migrate(config)
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            _polled(daemon)
            pm.set("H1", status="Vacant Unrented Ready")
            pm.set("H2", status="Vacant Unrented Ready")
            wait_until(
                "the second send to wait", lambda: len(audit_kinds(state_url, "order_sending")) == 2
            )
            stopping_at = time.monotonic()
            daemon.signal(signal.SIGTERM)
            assert daemon.process is not None
            assert daemon.process.wait(timeout=30) == 0, daemon.tail()
            assert time.monotonic() - stopping_at < 10  # not the 30 s slot wait
        finally:
            daemon.kill()
        assert orders_by_state(state_url) == {"placed": 1, "planned": 1}
        assert len(audit_kinds(state_url, "order_parked")) == 1
        assert len(sandbox.orders) == 1
        # Nothing lost: the next run sends the parked order (after its rate-limit slot).
        assert _run_once(config).returncode == 0
        assert orders_by_state(state_url) == {"placed": 2}
        assert len(sandbox.orders) == 2


def test_sighup_applies_a_good_config_and_refuses_a_bad_one(tmp_path: Path, pm: PmDatabase) -> None:
    """dry_run -> live takes effect without a restart; a restart-only key is reported and kept;
    a broken file is refused, audited, and the daemon runs on with the last good config."""
    pm.insert(home("H1"), home("H2"), home("H3"))
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with _sandbox() as sandbox:
        sections = _sections(tmp_path, state_url, sandbox.url, orders={"mode": "dry_run"})
        config = write_config(tmp_path / "propready.toml", sections)
        _migrate(config)
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            _polled(daemon)
            pm.set("H1", status="Vacant Unrented Ready")
            wait_until(
                "the dry-run decision", lambda: audit_kinds(state_url, "order_planned_dry_run")
            )
            assert sandbox.orders == []

            sections["orders"]["mode"] = "live"
            sections["state"]["url"] = f"sqlite:///{tmp_path / 'elsewhere.db'}"
            write_config(config, sections)
            daemon.signal(signal.SIGHUP)
            reloaded = daemon.wait_for("config_reloaded")
            assert reloaded["keys"] == ["orders.mode"]
            assert daemon.wait_for("config_restart_needed")["keys"] == ["state.url"]
            pm.set("H2", status="Vacant Unrented Ready")
            wait_until("H2 ordered live", lambda: len(sandbox.orders) == 1)

            config.write_text(config.read_text() + "\n[orders]\nsurprise = 1\n")
            daemon.signal(signal.SIGHUP)
            refused = daemon.wait_for("config_reload_refused")
            assert "propready.toml" in refused["error"]
            pm.set("H3", status="Vacant Unrented Ready")
            wait_until("H3 ordered under the kept config", lambda: len(sandbox.orders) == 2)
            assert daemon.stop() == 0
        finally:
            daemon.kill()
    assert [row["kind"] for row in audit_kinds(state_url, "config_reload_refused")] == [
        "config_reload_refused"
    ]
    assert audit_kinds(state_url, "config_reloaded")[0]["detail"]["applied"] == ["orders.mode"]


def _scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_and_health_follow_what_the_daemon_does(tmp_path: Path, pm: PmDatabase) -> None:
    """Counters and gauges move with real work; /healthz turns 503 when sends stop working
    (three HTTP 500 answers in a row)."""
    pm.insert(home("H1"), home("H2"), home("H3"), home("H4"))
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sandbox = _sandbox()
    sandbox.start()
    try:
        sections = _sections(
            tmp_path, state_url, sandbox.url, metrics={"listen": f"127.0.0.1:{port}"}
        )
        config = write_config(tmp_path / "propready.toml", sections)
        _migrate(config)
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            _polled(daemon)
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            pm.set("H1", status="Vacant Unrented Ready")
            wait_until("the order placed", lambda: orders_by_state(state_url) == {"placed": 1})
            samples = wait_until(
                "the placed order in the metrics",
                lambda: (
                    (s := _scrape(base)).get(("propready_orders", (("state", "placed"),))) == 1
                    and s
                ),
            )
            assert (
                samples[
                    ("propready_vendor_calls_total", (("operation", "create"), ("outcome", "201")))
                ]
                == 1
            )
            assert samples[("propready_decisions_total", (("outcome", "ordered"),))] == 1
            assert samples[("propready_readiness_events_total", ())] == 1
            assert (
                samples[("propready_last_successful_poll_timestamp_seconds", ())] > time.time() - 60
            )
            assert any(name == "propready_rules_version_info" for name, _ in samples)
            assert samples[("propready_job_duration_seconds_count", (("job", "poll"),))] >= 1

            sandbox.inject("create", "500", "500", "500")  # the vendor starts failing
            for code in ("H2", "H3", "H4"):
                pm.set(code, status="Vacant Unrented Ready")
            unhealthy = wait_until(
                "/healthz to turn 503",
                lambda: (r := httpx.get(f"{base}/healthz", timeout=5)).status_code == 503 and r,
            )
            body = unhealthy.json()
            assert body["status"] == "unhealthy"
            assert any("send" in problem for problem in body["problems"])
            samples = wait_until(
                "the health gauge to follow",
                lambda: (s := _scrape(base)).get(("propready_healthy", ())) == 0 and s,
                timeout=15,
            )
            assert (
                samples[
                    (
                        "propready_vendor_calls_total",
                        (("operation", "create"), ("outcome", "500")),
                    )
                ]
                >= 3
            )
            assert daemon.stop() == 0
        finally:
            daemon.kill()
    finally:
        sandbox.stop()


@pytest.mark.postgres
def test_the_daemon_survives_dropped_connections_and_a_postgresql_restart(
    tmp_path: Path, pm: PmDatabase
) -> None:
    """pg_terminate_backend on its sessions, a full server restart, then an outage: it reconnects
    and goes on; /healthz says 503 while the state database is down and 200 once it is back."""
    server = PrivatePostgres()
    server.start()
    try:
        admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text("CREATE DATABASE propready_state"))
        admin.dispose()
        state_url = server.url.rsplit("/", 1)[0] + "/propready_state"
        pm.insert(home("H1"), home("H2"), home("H3"))
        health = f"http://127.0.0.1:{free_port()}"
        with _sandbox() as sandbox:
            sections = _sections(
                tmp_path, state_url, sandbox.url, metrics={"listen": health.split("//")[1]}
            )
            config = write_config(tmp_path / "propready.toml", sections)
            _migrate(config)
            daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
            try:
                _polled(daemon)
                admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
                with admin.connect() as connection:
                    killed = connection.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity, "
                            "LATERAL pg_terminate_backend(pid) AS t "
                            "WHERE datname = 'propready_state' AND pid <> pg_backend_pid()"
                        )
                    ).scalar()
                admin.dispose()
                assert killed
                assert killed >= 1
                pm.set("H1", status="Vacant Unrented Ready")
                wait_until("H1 placed after the terminations", lambda: len(sandbox.orders) == 1)

                server.restart()
                pm.set("H2", status="Vacant Unrented Ready")
                wait_until(
                    "H2 placed after the restart", lambda: len(sandbox.orders) == 2, timeout=60
                )

                server.stop()  # an outage: every job fails until it is back
                down = wait_until(
                    "/healthz 503 while the state database is down",
                    lambda: (
                        (r := httpx.get(f"{health}/healthz", timeout=5)).status_code == 503 and r
                    ),
                )
                assert any("failed" in problem for problem in down.json()["problems"])
                server.start()
                wait_until(
                    "/healthz 200 once it is back",
                    lambda: httpx.get(f"{health}/healthz", timeout=5).status_code == 200,
                    timeout=60,
                )
                pm.set("H3", status="Vacant Unrented Ready")
                wait_until("H3 placed after the outage", lambda: len(sandbox.orders) == 3)
                assert daemon.process is not None
                assert daemon.process.poll() is None
                assert daemon.stop() == 0
            finally:
                daemon.kill()
        assert orders_by_state(state_url) == {"placed": 3}
    finally:
        server.destroy()
