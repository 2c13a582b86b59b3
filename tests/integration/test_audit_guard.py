"""`audit verify` catches what the chain alone cannot: cut-off rows, disabled triggers, a
rewritten head (with an anchor); the daemon publishes the anchor."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from propready.adapters.store.audit_chain import (
    chain_head,
    head_problem,
    trigger_problems,
    verify_chain,
)
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import audit_chain_head, audit_log
from propready.runtime.daemon import Daemon
from propready.runtime.metrics import DaemonMetrics
from propready.runtime.notify import SystemdNotifier
from propready.settings import Settings
from tests.integration.audit_support import (
    all_rows,
    propready,
    record_rows,
    superuser_bypass,
    write_config,
)
from tests.integration.cycle_support import QUERY, REPO, Clock, PmDatabase, home, wired


def _cut_the_end(engine: sa.Engine, keep: int) -> None:
    """Delete every row after `keep` with the triggers out of the way, as an owner could."""
    with superuser_bypass(engine) as connection:
        connection.execute(audit_log.delete().where(audit_log.c.id > keep))


def test_rows_cut_off_the_end_are_caught_by_the_head(state_url: str, tmp_path: Path) -> None:
    """The newest rows deleted behind the triggers' back: the chain checks out, the head not."""
    engine = create_state_engine(state_url)
    try:
        record_rows(engine, 5)
        last_hash = all_rows(engine)[-1]["row_hash"]
        with engine.connect() as connection:
            assert chain_head(connection) == (5, last_hash)
        _cut_the_end(engine, keep=3)
        with engine.connect() as connection:
            report = verify_chain(connection)
            problem = head_problem(connection, report)
        assert (report.ok, report.rows) == (True, 3)
        assert problem is not None
        assert "the chain head says the last row is 5 but the log ends at row 3" in problem
        result = propready(write_config(tmp_path, state_url), "audit", "verify")
    finally:
        engine.dispose()
    assert result.returncode == 1
    assert "BROKEN: the chain head says the last row is 5 but the log ends at row 3: rows were" in (
        result.stdout
    )


def _disable_a_trigger(engine: sa.Engine) -> str:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete"
            )
            return "trigger audit_log_no_update_delete on audit_log is disabled"
        connection.exec_driver_sql("DROP TRIGGER audit_log_no_delete")
        return "trigger audit_log_no_delete on audit_log is missing"


def test_a_disabled_or_missing_trigger_fails_verify_and_check(
    state_url: str, tmp_path: Path
) -> None:
    """PostgreSQL: a disabled guard trigger; SQLite: a dropped one; both named, exit 1."""
    engine = create_state_engine(state_url)
    try:
        record_rows(engine, 2)
        with engine.connect() as connection:
            assert trigger_problems(connection) == []
        expected = _disable_a_trigger(engine)
        with engine.connect() as connection:
            assert trigger_problems(connection) == [expected]
    finally:
        engine.dispose()
    config = write_config(tmp_path, state_url)
    result = propready(config, "audit", "verify")
    assert result.returncode == 1
    assert f"BROKEN: {expected}; the audit log is not protected" in result.stdout
    check = propready(config, "check")
    assert f"FAIL audit: {expected}" in check.stdout
    if state_url.startswith("postgresql"):  # the tests connect as the superuser that owns it
        assert "WARN audit: state.url connects as root, which owns audit_log" in check.stdout


def test_a_rewritten_head_is_caught_by_an_earlier_anchor(state_url: str, tmp_path: Path) -> None:
    """Cut rows and rewrite the head to match: verify alone says OK, the anchor says BROKEN."""
    engine = create_state_engine(state_url)
    try:
        record_rows(engine, 5)
        with engine.connect() as connection:
            anchor = chain_head(connection)
        assert anchor is not None
        rows = all_rows(engine)
        _cut_the_end(engine, keep=3)
        with superuser_bypass(engine) as connection:
            connection.execute(
                audit_chain_head.update().values(last_id=3, last_hash=rows[2]["row_hash"])
            )
    finally:
        engine.dispose()
    config = write_config(tmp_path, state_url)
    fooled = propready(config, "audit", "verify")
    assert fooled.returncode == 0, fooled.stdout
    caught = propready(config, "audit", "verify", "--anchor", f"{anchor[0]}:{anchor[1]}")
    assert caught.returncode == 1
    assert f"BROKEN: anchor row 5 no longer has hash {anchor[1]}" in caught.stdout


def test_the_daemon_publishes_the_head_as_a_log_event_and_a_metric(
    state_url: str, tmp_path: Path
) -> None:
    """publish_audit_anchor logs audit_anchor with ID:HASH and exports it as a metric."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"))
    settings = Settings(
        state={"url": state_url},
        source={"url": pm.url, "query": QUERY},
        rules={"path": REPO / "rules"},
        orders={"mode": "dry_run"},
    )
    metrics = DaemonMetrics()
    try:
        with wired(settings) as parts:
            record_rows(parts.state, 3)
            daemon = Daemon(
                parts,
                config_path=tmp_path / "unused.toml",
                clock=Clock(),
                metrics=metrics,
                notifier=SystemdNotifier(None),
            )
            with capture_logs() as logs:
                head = daemon.publish_audit_anchor()
            record_rows(parts.state, 1)
            newer = daemon.publish_audit_anchor()
    finally:
        pm.close()
    assert head is not None
    assert newer is not None
    (event,) = [e for e in logs if e["event"] == "audit_anchor"]
    assert (event["row_id"], event["anchor"]) == (3, f"3:{head[1]}")
    text = generate_latest(metrics.registry).decode()
    assert "propready_audit_chain_head_row 4.0" in text
    assert f'propready_audit_chain_head_info{{hash="{newer[1]}",row_id="4"}} 1.0' in text
    assert head[1] not in text  # the older head's series is gone
