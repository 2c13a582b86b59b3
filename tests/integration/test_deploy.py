"""The shipped deployment files: the systemd unit stays hardened, the example config loads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from propready.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_exposure_is_at_most_2() -> None:
    """`systemd-analyze security --offline=yes` scores the unit at 2.0 or better."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(DEPLOY / "propready.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for propready.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_example_config_is_valid() -> None:
    """The example config in deploy/ passes the same validation as a real one."""
    settings = load_settings(DEPLOY / "propready.example.toml")
    assert settings.orders.duplicate_window_hours == 72


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    """Every directive parses (a typo is only a warning to systemd, so any output fails here).

    The install path does not exist on a build machine; an existing binary stands in for it.
    """
    unit = tmp_path / "propready.service"
    text = (DEPLOY / "propready.service").read_text()
    assert "/opt/propready/bin/propready" in text
    unit.write_text(text.replace("/opt/propready/bin/propready", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stdout + result.stderr == ""
    for directive in ("Type=notify", "WatchdogSec=", "NotifyAccess=main", "ExecReload="):
        assert directive in text


def test_unit_caps_memory() -> None:
    """The unit sets MemoryMax= to a finite size, so a runaway is killed and restarted."""
    text = (DEPLOY / "propready.service").read_text()
    match = re.search(r"^MemoryMax=(\d+)([KMG])$", text, re.MULTILINE)
    assert match, "MemoryMax= missing or not a plain size"
    size = int(match.group(1)) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]
    assert 512 << 20 <= size <= 4 << 30
