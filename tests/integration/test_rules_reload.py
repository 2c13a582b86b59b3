"""Hot reload end to end: a real `propready run`, SIGHUP with a good file, then a bad one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.cycle_support import QUERY, REPO, PmDatabase, home
from tests.integration.daemon_support import wait_until


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propready", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _events(config: Path, kind: str) -> list[dict[str, Any]]:
    listed = _cli(config, "audit", "--kind", kind, "--format", "jsonl")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def _rewrite_unnoticed(path: Path, old: str, new: str) -> None:
    """Same size, same mtime: only SIGHUP (not the file watcher) can notice this edit."""
    assert len(old) == len(new)
    stat = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_sighup_swaps_good_rules_and_refuses_bad_ones(tmp_path: Path) -> None:
    """Good file: reloaded and used; bad file: refused, audited, reported by check; old rules kept."""
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    rule_file = rules / "readiness.yaml"
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"))
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///state.db"\n'
        f'[source]\nurl = "sqlite:///pm.db"\nquery = "{QUERY}"\npoll_interval_seconds = 1\n'
        f'[rules]\npath = "{rules}"\n[orders]\nmode = "dry_run"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n[log]\nformat = "json"\n'
    )
    assert _cli(config, "db", "upgrade").returncode == 0
    daemon = subprocess.Popen(
        [sys.executable, "-m", "propready", "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = wait_until("startup", lambda: _events(config, "rules_loaded"))
        assert started[0]["detail"]["cause"] == "startup"
        # 1. A good edit, invisible to the file watcher: SIGHUP reloads it.
        _rewrite_unnoticed(
            rule_file, "{slug: photos, quantity: 25}", "{slug: photos, quantity: 20}"
        )
        daemon.send_signal(signal.SIGHUP)
        reloaded = wait_until("rules_reloaded", lambda: _events(config, "rules_reloaded"))
        assert reloaded[0]["detail"]["cause"] == "SIGHUP"
        new_version = reloaded[0]["detail"]["to_version"]
        assert reloaded[0]["detail"]["from_version"] != new_version
        # 2. A bad edit (unknown field), again only via SIGHUP: refused, old rules kept.
        _rewrite_unnoticed(rule_file, "property.bedrooms >= 3", "property.bedroom >= 3 ")
        daemon.send_signal(signal.SIGHUP)
        refused = wait_until("refusal", lambda: _events(config, "rules_reload_refused"))
        detail = refused[0]["detail"]
        assert detail["cause"] == "SIGHUP"
        assert detail["kept_version"] == new_version
        assert any("unknown field property.bedroom " in p for p in detail["problems"])
        check = _cli(config, "check")
        assert check.returncode == 1
        assert "FAIL reload: " in check.stdout
        assert f"keeps running version {new_version}" in check.stdout
        # The daemon still decides with the last good rules (photos x20).
        pm.set("H1", status="Vacant Unrented Ready")
        matched = wait_until("a decision", lambda: _events(config, "rule_matched"))
        assert matched[0]["detail"]["rules_version"] == new_version
        assert {"slug": "photos", "quantity": 20} in matched[0]["detail"]["services"]
        # `propready explain` shows the decision trace: conditions with the facts they read.
        explained = _cli(config, "explain", "H1", "--format", "jsonl")
        rows = [json.loads(line) for line in explained.stdout.splitlines() if line.strip()]
        (decision,) = [r for r in rows if r["kind"] == "rule_matched"]
        assert decision["detail"]["considered"] == [
            "sfr-full-marketing",
            "sfr-small",
            "attached-homes",
        ]
        assert {
            "kind": "when",
            "rule_id": "sfr-full-marketing",
            "condition": 'property.property_type == "single_family" && property.bedrooms >= 3',
            "result": True,
            "facts": {"property_type": "single_family", "bedrooms": 3},
        } in decision["detail"]["trace"]
        # 3. Fixing the file is noticed by the watcher without a signal; check is clean again.
        # The fixed file equals the running rules again, so this is a load, not a new version.
        fixed = rule_file.read_text().replace("property.bedroom >= 3 ", "property.bedrooms >= 3")
        rule_file.write_text(fixed)
        wait_until(
            "file-change load",
            lambda: [
                e for e in _events(config, "rules_loaded") if e["detail"]["cause"] == "file change"
            ],
        )
        assert "FAIL reload: " not in _cli(config, "check").stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
        pm.close()
    assert daemon.returncode == 0, err
    assert '"event": "rules_reload_refused"' in out
