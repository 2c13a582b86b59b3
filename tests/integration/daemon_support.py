"""Helpers for tests that drive real `propready run` processes.

- `write_config`: a TOML config from plain dicts.
- `DaemonProcess`: starts `python -m propready run`, collects its JSON log lines, waits for
  events, signals it.
- `PrivatePostgres`: a throwaway PostgreSQL cluster of our own (initdb as the `postgres` user, a
  free port, a socket folder in /tmp) that a test may restart or stop without disturbing the
  machine's server that every other test uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from propready.adapters.store import audit, outbox
from propready.adapters.store.engine import create_state_engine

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


class DaemonProcess:
    """One `propready run` process whose stdout (JSON log lines) goes to a file."""

    def __init__(self, config: Path, log_path: Path, env: Mapping[str, str] | None = None):
        self.config = config
        self.log_path = log_path
        self.env = {**os.environ, "PROPREADY_LOG__FORMAT": "json", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "propready", "--config", str(self.config), "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        if not self.log_path.exists():
            return found
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    def wait_for(
        self,
        name: str,
        where: Callable[[dict[str, Any]], bool] = lambda _e: True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"the daemon exited ({self.process.returncode}):\n{self.tail()}")
            matches = [event for event in self.events(name) if where(event)]
            return matches[0] if matches else None

        result: dict[str, Any] = wait_until(f"log event {name}", check, timeout)
        return result

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def audit_kinds(state_url: str, kind: str) -> list[dict[str, Any]]:
    """The audit rows of one kind, oldest first; empty while the database is not there yet."""
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            return audit.query_events(connection, kinds=[kind])
    except sa.exc.OperationalError:
        return []
    finally:
        engine.dispose()


def orders_by_state(state_url: str) -> dict[str, int]:
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            return outbox.count_by_state(connection)
    except sa.exc.OperationalError:
        return {}
    finally:
        engine.dispose()


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, run as the `postgres` user on a free port."""

    def __init__(self) -> None:
        if shutil.which("runuser") is None or not (PG_BIN / "initdb").exists():
            pytest.skip("needs PostgreSQL 15 server binaries and runuser")
        self.root = Path(tempfile.mkdtemp(prefix="propready-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "root", "--no-sync"
        )

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            timeout=120,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://root@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-l",
            str(self.root / "server.log"), "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
