"""Write-back of delivered orders to a real writable PM database (PostgreSQL and SQLite):
once per order, retried while the target is down, audited without secrets, crash-safe under
SIGKILL, one execution when workers race, given up after hours, retried by an operator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from propready.adapters.store import attention as attention_store
from propready.adapters.store import writebacks
from propready.core.writeback import WritebackState
from propready.service.writeback import (
    WritebackRetryError,
    check_lines,
    request_retry,
    run_writebacks,
)
from propready.settings import Settings
from tests.integration.tcp_proxy import CuttableProxy
from tests.integration.writeback_support import (
    T0,
    TARGET_PASSWORD,
    UPDATE,
    PmTarget,
    all_audit_text,
    audit_rows,
    delivered_order,
    params_for,
    pm_target,
    settings_for,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PmTarget]:
    """A writable PM database, once as a SQLite file and once on PostgreSQL."""
    yield from pm_target(request.param, tmp_path)


@pytest.fixture
def pg_target(tmp_path: Path) -> Iterator[PmTarget]:
    yield from pm_target("postgresql", tmp_path)


def states(state: sa.Engine) -> dict[str, str]:
    with state.connect() as connection:
        return {
            row.external_order_id: row.state.value for row in writebacks.list_writebacks(connection)
        }


def test_each_delivered_order_is_written_back_once_and_never_again(
    state_engine: sa.Engine, state_url: str, target: PmTarget
) -> None:
    """Two delivered orders: one run writes both (one statement each), audited
    writeback_done; later runs and a repeated enqueue change nothing."""
    settings = settings_for(state_url, target.url)
    first, _second = delivered_order(state_engine, 1), delivered_order(state_engine, 2)
    done = run_writebacks(state_engine, settings, "host-a", lambda: T0)
    assert (done.done, done.failed) == (2, 0)
    media = target.media()
    assert sorted(media) == ["pr-0001", "pr-0002"]
    assert media["pr-0001"]["link"] == "https://media.example/orders/1"
    assert media["pr-0001"]["photo_count"] == 25
    assert all(row["writes"] == 1 for row in media.values())
    assert str(media["pr-0001"]["delivered_at"]).startswith("2026-12-01")
    # Nothing is due any more, however much later; a second enqueue for the order is a no-op.
    with state_engine.begin() as connection:
        writebacks.enqueue_writeback(connection, first, params_for(1), T0 + timedelta(days=1))
    for later in (T0 + timedelta(minutes=1), T0 + timedelta(days=3)):
        assert run_writebacks(state_engine, settings, "host-b", lambda at=later: at).done == 0
    assert all(row["writes"] == 1 for row in target.media().values())
    assert states(state_engine) == {"pr-0001": "done", "pr-0002": "done"}
    done_rows = audit_rows(state_engine, "writeback_done")
    assert [row["external_order_id"] for row in done_rows] == ["pr-0001", "pr-0002"]
    assert done_rows[0]["order_id"] == first
    assert done_rows[0]["detail"]["rows"] == 1


def test_the_update_statement_fills_the_units_column(
    state_engine: sa.Engine, state_url: str, target: PmTarget
) -> None:
    """The documented UPDATE sets photos_url of the delivered home only."""
    target.add_units("DEN-0001", "DEN-0002")
    delivered_order(state_engine, 1)
    assert (
        run_writebacks(
            state_engine, settings_for(state_url, target.url, UPDATE), "h", lambda: T0
        ).done
        == 1
    )
    assert target.photos_urls() == {
        "DEN-0001": "https://media.example/orders/1",
        "DEN-0002": None,
    }


def test_a_target_that_is_down_is_retried_with_backoff_until_it_is_back(
    state_engine: sa.Engine, state_url: str, pg_target: PmTarget
) -> None:
    """The PM database behind a stopped proxy: the attempt fails (audited once, the driver's
    reason, no password), waits out its backoff, and once the proxy is up the statement runs
    exactly once."""
    with CuttableProxy(("127.0.0.1", 5432)) as proxy:
        url = pg_target.url.replace(":5432/", f":{proxy.port}/")
        settings = settings_for(state_url, url)
        delivered_order(state_engine, 1)
        delivered_order(state_engine, 2)
        proxy.down()
        first = run_writebacks(state_engine, settings, "h", lambda: T0)
        # The target is failing: the second order waits for the next run instead of timing out.
        assert (first.done, first.failed) == (0, 1)
        assert states(state_engine) == {"pr-0001": "failed", "pr-0002": "pending"}
        failed = audit_rows(state_engine, "writeback_failed")
        assert len(failed) == 1
        reason = failed[0]["detail"]["reason"]
        assert f"127.0.0.1:{proxy.port}" in reason
        assert failed[0]["detail"]["gave_up"] is False
        with state_engine.connect() as connection:
            assert [n.external_order_id for n in attention_store.failed_writebacks(connection)] == [
                "pr-0001"
            ]
        # Still down for an hour: failures go on, but the audit log heard once of each order.
        for minutes in (5, 20, 60):
            run_writebacks(state_engine, settings, "h", lambda m=minutes: T0 + timedelta(minutes=m))
        failed = audit_rows(state_engine, "writeback_failed")
        assert [row["external_order_id"] for row in failed] == ["pr-0001", "pr-0002"]
        assert pg_target.media() == {}
        proxy.up()
        back = T0 + timedelta(hours=3)
        assert run_writebacks(state_engine, settings, "h", lambda: back).done == 2
    media = pg_target.media()
    assert sorted(media) == ["pr-0001", "pr-0002"]
    assert all(row["writes"] == 1 for row in media.values())
    assert TARGET_PASSWORD not in all_audit_text(state_engine)
    with state_engine.connect() as connection:
        assert attention_store.failed_writebacks(connection) == []
        row = writebacks.find(connection, "pr-0001")
    assert row is not None
    assert row.state is WritebackState.DONE
    assert row.attempts >= 2


def test_a_bad_statement_is_audited_given_up_after_hours_and_retried_by_an_operator(
    state_engine: sa.Engine, state_url: str, target: PmTarget
) -> None:
    """A statement naming a missing table fails with the driver's first line (no password);
    after give_up_after_hours it is given up (audited, listed for a person); `retry` makes it
    due again and, the table fixed, it is written once."""
    statement = (
        "UPDATE no_such_table SET photos_url = :photo_manage_link "
        "WHERE unit_id = :external_property_id"
    )
    settings = settings_for(state_url, target.url, statement, give_up_after_hours=2)
    delivered_order(state_engine, 1)
    assert run_writebacks(state_engine, settings, "h", lambda: T0).failed == 1
    with state_engine.connect() as connection:
        row = writebacks.find(connection, "pr-0001")
    assert row is not None
    assert row.state is WritebackState.FAILED
    assert row.last_error is not None
    assert "no_such_table" in row.last_error
    assert "\n" not in row.last_error
    # Retried on its backoff for two hours, then given up.
    at, outcome = T0, None
    for _ in range(60):
        at = at + timedelta(minutes=11)
        outcome = run_writebacks(state_engine, settings, "h", lambda a=at: a)
        if outcome.given_up:
            break
    assert outcome is not None
    assert outcome.given_up == 1
    assert T0 + timedelta(hours=2) <= at < T0 + timedelta(hours=3)
    assert states(state_engine) == {"pr-0001": "given_up"}
    failed = audit_rows(state_engine, "writeback_failed")
    assert [row["detail"]["gave_up"] for row in failed] == [False, True]
    assert "no_such_table" in failed[-1]["detail"]["reason"]
    # Given up: no more attempts, however long we wait.
    assert run_writebacks(state_engine, settings, "h", lambda: at + timedelta(days=5)).failed == 0
    with state_engine.connect() as connection:
        assert [n.external_order_id for n in attention_store.failed_writebacks(connection)] == [
            "pr-0001"
        ]
    # An operator fixes the statement and asks for a retry.
    fixed = settings_for(state_url, target.url, UPDATE)
    target.add_units("DEN-0001")
    later = at + timedelta(days=6)
    request_retry(state_engine, "pr-0001", "units table is the right one", "ops@host", later)
    retry_rows = audit_rows(state_engine, "writeback_retry_requested")
    assert retry_rows[0]["detail"]["operator"] == "ops@host"
    assert retry_rows[0]["detail"]["previous_state"] == "given_up"
    assert run_writebacks(state_engine, fixed, "h", lambda: later).done == 1
    assert target.photos_urls() == {"DEN-0001": "https://media.example/orders/1"}
    with pytest.raises(WritebackRetryError, match="already written back"):
        request_retry(state_engine, "pr-0001", "again", "ops@host", later)
    with pytest.raises(WritebackRetryError, match="no write-back queued"):
        request_retry(state_engine, "pr-9999", "?", "ops@host", later)
    assert TARGET_PASSWORD not in all_audit_text(state_engine)


CRASH_SCRIPT = """
import sys
import time
from datetime import datetime
from propready.adapters.store.engine import create_state_engine
from propready.service.writeback import run_writebacks
from tests.integration.writeback_support import settings_for

state_url, target_url, at = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3])
settings = settings_for(state_url, target_url)
state = create_state_engine(state_url)
with state.connect():
    pass
while time.time() < float(sys.argv[5]):  # racing workers start together
    time.sleep(0.01)
run = run_writebacks(state, settings, sys.argv[4], lambda: at)
print("RESULT", run.done, run.failed)
"""


def _worker(
    state_url: str,
    target_url: str,
    owner: str,
    crash_at: str | None = None,
    start_at: float = 0.0,
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PROPREADY_CRASH_AT"}
    if crash_at:
        env["PROPREADY_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CRASH_SCRIPT,
            state_url,
            target_url,
            T0.isoformat(),
            owner,
            str(start_at),
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_after_the_target_committed_leaves_one_effect(
    state_engine: sa.Engine, state_url: str, target: PmTarget
) -> None:
    """Killed between the target's commit and the state's: the row stays leased until its
    lease expires, then the (idempotent) statement runs again; one row, the right values."""
    delivered_order(state_engine, 1)
    crashed = _worker(state_url, target.url, "doomed", "writeback_after_target_commit")
    _out, err = crashed.communicate(timeout=120)
    assert crashed.returncode == -9, err
    assert target.media()["pr-0001"]["writes"] == 1
    assert states(state_engine) == {"pr-0001": "leased"}
    settings = settings_for(state_url, target.url)
    assert run_writebacks(state_engine, settings, "h", lambda: T0 + timedelta(seconds=10)).done == 0
    after_lease = T0 + timedelta(seconds=settings.writeback.timeout_seconds + 31)
    assert run_writebacks(state_engine, settings, "h", lambda: after_lease).done == 1
    media = target.media()
    assert list(media) == ["pr-0001"]  # one effect ...
    assert media["pr-0001"]["writes"] == 2  # ... of a statement that ran twice
    assert media["pr-0001"]["link"] == "https://media.example/orders/1"
    assert states(state_engine) == {"pr-0001": "done"}
    assert len(audit_rows(state_engine, "writeback_done")) == 1


def test_sigkill_before_the_target_committed_changes_nothing_there(
    state_engine: sa.Engine, state_url: str, target: PmTarget
) -> None:
    """Killed after executing and before the target's commit: the target rolls back; after the
    lease expires the statement runs once."""
    delivered_order(state_engine, 1)
    crashed = _worker(state_url, target.url, "doomed", "writeback_before_target_commit")
    _out, err = crashed.communicate(timeout=120)
    assert crashed.returncode == -9, err
    assert target.media() == {}
    settings = settings_for(state_url, target.url)
    after_lease = T0 + timedelta(minutes=5)
    assert run_writebacks(state_engine, settings, "h", lambda: after_lease).done == 1
    assert target.media()["pr-0001"]["writes"] == 1


def test_two_workers_racing_run_each_statement_once(
    state_engine: sa.Engine, state_url: str, target: PmTarget
) -> None:
    """Two processes start draining the same 60 write-backs at the same moment: every order's
    statement ran exactly once, whichever worker ran it."""
    for n in range(60):
        delivered_order(state_engine, n)
    start_at = time.time() + 4
    workers = [_worker(state_url, target.url, f"worker-{n}", start_at=start_at) for n in range(2)]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err
        result = next(line for line in out.splitlines() if line.startswith("RESULT "))
        results.append(tuple(int(x) for x in result.split()[1:]))
    assert sum(done for done, _failed in results) == 60
    media = target.media()
    assert len(media) == 60
    assert {row["writes"] for row in media.values()} == {1}
    assert set(states(state_engine).values()) == {"done"}
    assert len(audit_rows(state_engine, "writeback_done")) == 60


def test_check_says_whether_the_target_takes_the_statement(
    state_url: str, target: PmTarget, tmp_path: Path
) -> None:
    """PASS when the statement runs (rolled back: nothing written); FAIL with the driver's
    line when it cannot; off when no url is set."""
    good = check_lines(settings_for(state_url, target.url))
    assert good[0][1] is True, good
    assert target.media() == {}
    bad = check_lines(settings_for(state_url, target.url, UPDATE.replace("units", "nowhere")))
    assert bad[0][1] is False
    assert "nowhere" in bad[0][2]
    assert TARGET_PASSWORD not in bad[0][2]
    target.add_units("A", "B", "C")
    careless = check_lines(
        settings_for(state_url, target.url, "UPDATE units SET photos_url = :photo_manage_link")
    )
    assert careless[0][1] is None
    assert "3 row(s)" in careless[0][2]
    off = Settings(state={"url": state_url}, source={"url": "sqlite:///x.db", "query": "SELECT 1"})
    assert check_lines(off) == [("writeback", True, "no url: write-back is off")]


def test_nothing_runs_while_the_url_is_empty(state_engine: sa.Engine, state_url: str) -> None:
    """Write-back off: queued rows wait, nothing is attempted."""
    delivered_order(state_engine, 1)
    off = Settings(state={"url": state_url}, source={"url": "sqlite:///x.db", "query": "SELECT 1"})
    assert run_writebacks(state_engine, off, "h", lambda: T0).done == 0
    assert states(state_engine) == {"pr-0001": "pending"}
