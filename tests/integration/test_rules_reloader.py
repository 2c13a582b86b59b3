"""The reloader on both state stores: refuse and keep, swap, audit, and what check reports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import sqlalchemy as sa

from propready.adapters.store.schema import audit_log
from propready.service.rules_reload import RuleReloader, pending_refusals
from propready.settings import Settings
from tests.integration.cycle_support import QUERY, REPO, Clock, PmDatabase, home, wired


def _touch(path: Path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a distinct mtime whatever the clock says


def test_bad_files_are_refused_and_good_ones_swapped(state_url: str, tmp_path: Path) -> None:
    """A refused reload keeps the running rules and is reported; a good one replaces them."""
    rules_dir = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules_dir)
    rule_file = rules_dir / "readiness.yaml"
    good = rule_file.read_text()
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"))
    settings = Settings(
        state={"url": state_url},
        source={"url": pm.url, "query": QUERY},
        rules={"path": rules_dir},
        orders={"mode": "dry_run"},
    )
    try:
        with wired(settings) as parts:
            reloader = RuleReloader(parts, Clock())
            reloader.record_startup()
            started = parts.rules
            assert reloader.check_files() is False  # nothing changed
            _touch(rule_file, good.replace("property.bedrooms >= 3", "property.bedroomz >= 3"), 1)
            assert reloader.check_files() is False
            assert parts.rules is started
            (line,) = pending_refusals(state_url)
            assert f"keeps running version {started.version}" in line
            assert "unknown field property.bedroomz" in line
            assert reloader.check_files() is False  # the same bad files are not re-audited
            _touch(rule_file, good.replace("quantity: 25}", "quantity: 20}"), 2)
            assert reloader.check_files() is True
            assert parts.rules.version != started.version
            assert pending_refusals(state_url) == []
            with parts.state.connect() as connection:
                rows = connection.execute(
                    sa.select(audit_log.c.kind, audit_log.c.rules_version).order_by(audit_log.c.id)
                ).all()
    finally:
        pm.close()
    assert [tuple(r) for r in rows] == [
        ("rules_loaded", started.version),
        ("rules_reload_refused", started.version),
        ("rules_reloaded", parts.rules.version),
    ]
