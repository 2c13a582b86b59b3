"""The daemon's `notify` job: a real `propready run` tells people and counts it in /metrics."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from tests.integration.cycle_support import QUERY, REPO, PmDatabase, home
from tests.integration.daemon_support import DaemonProcess, free_port, wait_until, write_config
from tests.integration.notify_support import JsonReceiver

pytestmark = pytest.mark.slow


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(home("H1"))
    yield database
    database.close()


def test_the_daemon_notifies_an_order_waiting_for_approval(tmp_path: Path, pm: PmDatabase) -> None:
    """A home becomes ready in approval mode: within seconds the channel hears that an order
    waits for approval, /metrics counts the message for the channel's masked label, and the
    daemon still stops cleanly."""
    receiver = JsonReceiver()
    port = free_port()
    with SandboxServer(SandboxConfig.default()) as sandbox:
        config = write_config(
            tmp_path / "propready.toml",
            {
                "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
                "source": {"url": pm.url, "query": QUERY, "poll_interval_seconds": 1},
                "rules": {"path": REPO / "rules"},
                "orders": {"mode": "approval"},
                "planomatic": {"base_url": sandbox.url, "api_key": "sandbox-key"},
                "metrics": {"listen": f"127.0.0.1:{port}"},
                "notify": {"interval_seconds": 0.5, "group_wait_seconds": 0, "digest_at": ""},
                "log": {"format": "json"},
            },
        )
        url = receiver.url(extra="?+X-Token=daemon-s3cret-token")
        env = {"PROPREADY_NOTIFY__URLS": url}
        daemon = DaemonProcess(config, tmp_path / "daemon.log", env=env)
        subprocess.run(
            [sys.executable, "-m", "propready", "--config", str(config), "db", "upgrade"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        daemon.start()
        try:
            daemon.wait_for("cycle", lambda e: e.get("job") == "poll")
            pm.set("H1", status="Vacant Unrented Ready")
            wait_until("the approval message", lambda: receiver.received, timeout=60)
            [message] = receiver.received
            assert message["title"] == "propready: 1 order waits for approval"
            label = f"json://127.0.0.1:{receiver.port}/hook"
            metrics = wait_until(
                "the sent notification in /metrics",
                lambda: (
                    (text := httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
                    and f'propready_notifications_total{{channel="{label}",outcome="sent"}} 1.0'
                    in text
                    and text
                ),
            )
            assert "daemon-s3cret-token" not in metrics
            sent = daemon.events("notification_sent")
            assert sent[0]["channel"] == label
            assert daemon.stop() == 0
            assert "daemon-s3cret-token" not in (tmp_path / "daemon.log").read_text()
        finally:
            daemon.kill()
            receiver.close()
