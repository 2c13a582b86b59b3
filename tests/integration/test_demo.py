"""The README's demo (`make demo`) runs the real daemon end to end and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_demo_runs_the_real_daemon_and_places_orders(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "propready.demo.run", "--workdir", str(tmp_path), "--homes", "60"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (tmp_path / "daemon.log").read_text()
    assert "ready" in log
    assert "stopped" in log
    assert "placed" in result.stdout
    # The lifecycle: the sandbox's webhooks through `propready serve` to delivered orders.
    assert "orders delivered (webhooks -> propready serve -> apply_news)" in result.stdout
    # The write-back: each delivered order's photo link in the demo PM database's unit table.
    assert "photo links written back to the PM database (unit.sphotosurl)" in result.stdout
    assert "photo_manage_link=https://" in result.stdout
