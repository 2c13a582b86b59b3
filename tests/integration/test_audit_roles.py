"""The runbook's two PostgreSQL roles: the owner migrates, the daemon works but cannot tamper.

The GRANT block is read from deploy/RUNBOOK.md and run as written (role names aside), so the
runbook's example stays true.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, migrate
from propready.adapters.store.audit_chain import (
    audit_owner_role,
    head_problem,
    trigger_problems,
    verify_chain,
)
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import audit_log
from propready.core.audit_kinds import AuditKind
from propready.service import run_cycle
from tests.conftest import PG_ADMIN_URL, PG_BASE
from tests.integration.cycle_support import REPO, Clock, PmDatabase, home, make_settings, wired

RUNBOOK = REPO / "deploy" / "RUNBOOK.md"


def runbook_grants() -> str:
    """The SQL block of the runbook that grants the daemon role its privileges."""
    text = RUNBOOK.read_text()
    match = re.search(r"```sql\n-- daemon-role-grants[^\n]*\n(.*?)```", text, re.DOTALL)
    assert match, "the runbook's daemon-role-grants block is missing"
    return match.group(1)


@pytest.fixture
def roles() -> Iterator[tuple[str, str]]:
    """A database owned by a fresh owner role, migrated by it, and a granted daemon role; the
    state URLs of both."""
    suffix = uuid.uuid4().hex[:8]
    owner, daemon, database = f"pr_owner_{suffix}", f"pr_daemon_{suffix}", f"pr_roles_{suffix}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {owner} LOGIN")  # type: ignore[arg-type]
        admin.execute(f"CREATE ROLE {daemon} LOGIN")  # type: ignore[arg-type]
        admin.execute(f'CREATE DATABASE "{database}" OWNER {owner}')  # type: ignore[arg-type]
    host = PG_BASE.split("@", 1)[1]
    owner_url = f"postgresql://{owner}@{host}/{database}"
    daemon_url = f"postgresql://{daemon}@{host}/{database}"
    engine = create_state_engine(owner_url)
    try:
        migrate.upgrade(engine)
        grants = runbook_grants().replace("propready_daemon", daemon)
        with engine.begin() as connection:
            for statement in grants.split(";"):
                if statement.strip():
                    connection.exec_driver_sql(statement)
    finally:
        engine.dispose()
    yield owner_url, daemon_url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')  # type: ignore[arg-type]
        admin.execute(f"DROP ROLE IF EXISTS {daemon}")  # type: ignore[arg-type]
        admin.execute(f"DROP ROLE IF EXISTS {owner}")  # type: ignore[arg-type]


def test_the_daemon_role_runs_a_cycle_but_cannot_touch_the_audit_log(
    roles: tuple[str, str], tmp_path: Path, sandbox: SandboxServer
) -> None:
    """As the daemon role: poll, decide, send and audit work; disabling a trigger, editing or
    deleting audit rows and moving the chain head are refused."""
    owner_url, daemon_url = roles
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"))
    clock = Clock()
    try:
        with wired(make_settings(daemon_url, pm.url, sandbox.url)) as parts:
            run_cycle(parts, clock)
            pm.set("H1", status="Vacant Unrented Ready")
            summary = run_cycle(parts, clock)
    finally:
        pm.close()
    assert summary.placed == 1
    engine = create_state_engine(daemon_url)
    try:
        for statement, refusal in (
            ("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete", "must be owner"),
            ("ALTER TABLE audit_log DISABLE TRIGGER ALL", "must be owner"),
            ("UPDATE audit_log SET kind = 'x'", "permission denied"),
            ("DELETE FROM audit_log", "permission denied"),
            ("UPDATE audit_chain_head SET last_id = 0", "permission denied"),
            ("DROP TRIGGER audit_log_chain ON audit_log", "must be owner"),
        ):
            with pytest.raises(sa.exc.DBAPIError, match=refusal), engine.begin() as connection:
                connection.exec_driver_sql(statement)
        with engine.connect() as connection:
            report = verify_chain(connection)
            assert report.ok
            assert report.rows > 3
            assert head_problem(connection, report) is None
            assert trigger_problems(connection) == []
            assert audit_owner_role(connection) is None  # check says nothing
    finally:
        engine.dispose()
    owner = create_state_engine(owner_url)
    try:
        with owner.connect() as connection:
            assert audit_owner_role(connection) == owner_url.split("//")[1].split("@")[0]
    finally:
        owner.dispose()


def test_the_database_sets_time_and_host_for_the_daemon_role(roles: tuple[str, str]) -> None:
    """A row the daemon role writes with a forged time and host gets the database's clock and
    the connection's propready.host; the owner's own time is kept."""
    owner_url, daemon_url = roles
    forged = datetime(2001, 1, 1, tzinfo=UTC)
    saved_host = audit.HOST
    daemon_engine = create_state_engine(daemon_url)
    owner_engine = create_state_engine(owner_url)
    try:
        audit.identify_host("host-a")  # what each new connection tells the database
        with daemon_engine.begin() as connection:
            before = connection.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
            audit.identify_host("forged-host")  # what the row itself claims
            audit.record(connection, AuditKind.ORDER_SENDING, forged, detail={"by": "daemon"})
            after = connection.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
        with owner_engine.begin() as connection:
            audit.record(connection, AuditKind.ORDER_SENDING, forged, detail={"by": "owner"})
        with owner_engine.connect() as connection:
            rows = connection.execute(
                sa.select(audit_log.c.at, audit_log.c.host).order_by(audit_log.c.id)
            ).all()
            assert verify_chain(connection).ok
    finally:
        audit.identify_host(saved_host)
        daemon_engine.dispose()
        owner_engine.dispose()
    (daemon_at, daemon_host), (owner_at, owner_host) = rows
    assert before <= daemon_at <= after
    assert abs(daemon_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert daemon_host == "host-a"
    assert (owner_at, owner_host) == (forged, "forged-host")
