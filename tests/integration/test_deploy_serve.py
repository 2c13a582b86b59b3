"""The shipped unit of `propready serve`: hardened, valid, and wired to its credential."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "propready-serve.service"
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


@needs_systemd
def test_serve_unit_exposure_is_at_most_2() -> None:
    """`systemd-analyze security --offline=yes` scores the serve unit at 2.0 or better."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(
        r"Overall exposure level for propready-serve.service: ([0-9.]+)", result.stdout
    )
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


@needs_systemd
def test_serve_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    """Every directive parses; the unit runs `serve` as a notify service with the token."""
    text = UNIT.read_text()
    assert "/opt/propready/bin/propready --config /etc/propready/propready.toml serve" in text
    unit = tmp_path / "propready-serve.service"
    unit.write_text(text.replace("/opt/propready/bin/propready", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stdout + result.stderr == ""
    for directive in ("Type=notify", "NotifyAccess=main", "LoadCredential=webhooks__token:"):
        assert directive in text
