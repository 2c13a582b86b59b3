"""The audit log is append-only and tamper-evident on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from propready.adapters.store import audit, migrate
from propready.adapters.store.audit_chain import GENESIS, chain_hash, sqlite_content, verify_chain
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import audit_log
from propready.core.audit_kinds import AuditKind
from tests.conftest import PG_ADMIN_URL
from tests.integration.audit_support import (
    T0,
    all_rows,
    propready,
    record_rows,
    superuser_bypass,
    write_config,
)


@pytest.fixture
def pg_engine(pg_database: str) -> Iterator[sa.Engine]:
    """A migrated PostgreSQL state database only (for PostgreSQL-only behaviour)."""
    engine = create_state_engine(pg_database)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _verify(engine: sa.Engine) -> tuple[bool, int, int | None]:
    with engine.connect() as connection:
        report = verify_chain(connection)
    return report.ok, report.rows, report.broken_id


def test_rows_form_one_chain_from_genesis(state_engine: sa.Engine) -> None:
    """Ids run 1..n; each row's prev_hash is the previous row's row_hash, the first's is GENESIS."""
    record_rows(state_engine, 5)
    rows = all_rows(state_engine)
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev_hash"] == GENESIS
    assert [r["prev_hash"] for r in rows[1:]] == [r["row_hash"] for r in rows[:-1]]
    assert len({r["row_hash"] for r in rows}) == 5
    assert _verify(state_engine) == (True, 5, None)


def test_update_is_refused(state_engine: sa.Engine) -> None:
    """UPDATE of an audit row fails with an append-only error and changes nothing."""
    record_rows(state_engine, 2)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), state_engine.begin() as c:
        c.execute(audit_log.update().values(kind="edited"))
    assert {r["kind"] for r in all_rows(state_engine)} == {"trigger_fired"}


def test_delete_is_refused(state_engine: sa.Engine) -> None:
    """DELETE of one row and of every row both fail; the rows remain."""
    record_rows(state_engine, 2)
    for statement in (audit_log.delete().where(audit_log.c.id == 1), audit_log.delete()):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), state_engine.begin() as c:
            c.execute(statement)
    assert len(all_rows(state_engine)) == 2


def test_truncate_is_refused_on_postgresql(pg_engine: sa.Engine) -> None:
    """TRUNCATE audit_log (and of the chain's lock row table) fails on PostgreSQL."""
    record_rows(pg_engine, 2)
    for table in ("audit_log", "audit_chain_head"):
        refused = pytest.raises(sa.exc.DatabaseError, match="append-only: TRUNCATE refused")
        with refused, pg_engine.begin() as connection:
            connection.exec_driver_sql(f"TRUNCATE {table}")
    assert len(all_rows(pg_engine)) == 2


def test_superuser_edit_is_caught_by_verify(state_engine: sa.Engine) -> None:
    """A row altered with the triggers bypassed is reported as the first broken row."""
    record_rows(state_engine, 6)
    with superuser_bypass(state_engine) as connection:
        connection.execute(
            audit_log.update().where(audit_log.c.id == 4).values(external_property_id="P-forged")
        )
    with state_engine.connect() as connection:
        report = verify_chain(connection)
    assert (report.ok, report.broken_id, report.rows) == (False, 4, 3)
    assert report.problem is not None
    assert "altered" in report.problem


def test_rehashed_edit_breaks_the_next_link(state_engine: sa.Engine) -> None:
    """Recomputing the edited row's own hash does not help: the next row's link breaks."""
    record_rows(state_engine, 4)
    rows = all_rows(state_engine)
    forged = {**rows[1], "detail": {"kind": "forged"}}
    with superuser_bypass(state_engine) as connection:
        connection.execute(
            audit_log.update().where(audit_log.c.id == 2).values(detail=forged["detail"])
        )
    with state_engine.connect() as connection:
        content = (
            connection.execute(
                sa.text("SELECT audit_log_content(a) FROM audit_log a WHERE id = 2")
            ).scalar_one()
            if connection.dialect.name == "postgresql"
            else None
        )
    new_hash = chain_hash(rows[1]["prev_hash"], content or sqlite_content(forged))
    with superuser_bypass(state_engine) as connection:
        connection.execute(audit_log.update().where(audit_log.c.id == 2).values(row_hash=new_hash))
    ok, _, broken = _verify(state_engine)
    assert (ok, broken) == (False, 3)


def test_deleted_row_is_caught_by_verify(state_engine: sa.Engine) -> None:
    """A row deleted from the middle with the triggers bypassed breaks the next row's link."""
    record_rows(state_engine, 5)
    with superuser_bypass(state_engine) as connection:
        connection.execute(audit_log.delete().where(audit_log.c.id == 2))
    with state_engine.connect() as connection:
        report = verify_chain(connection)
    assert (report.ok, report.broken_id) == (False, 3)
    assert report.problem is not None
    assert "prev_hash" in report.problem


def test_verify_command_reports_ok_and_the_first_broken_row(state_url: str, tmp_path: Path) -> None:
    """`propready audit verify` prints OK with the count, then exit 1 naming the edited row."""
    engine = create_state_engine(state_url)
    try:
        record_rows(engine, 3)
        config = write_config(tmp_path, state_url)
        good = propready(config, "audit", "verify")
        assert good.returncode == 0, good.stderr
        assert good.stdout.startswith("OK: 3 rows, head 3 ")
        head_hash = good.stdout.split()[-1]
        anchored = propready(config, "audit", "verify", "--anchor", f"3:{head_hash}")
        assert anchored.returncode == 0, anchored.stdout
        wrong_anchor = propready(config, "audit", "verify", "--anchor", f"2:{head_hash}")
        assert wrong_anchor.returncode == 1
        assert "anchor row 2" in wrong_anchor.stdout
        with superuser_bypass(engine) as connection:
            connection.execute(audit_log.update().where(audit_log.c.id == 2).values(kind="x"))
        bad = propready(config, "audit", "verify")
    finally:
        engine.dispose()
    assert bad.returncode == 1
    assert bad.stdout.startswith("BROKEN at audit row 2:")


def test_concurrent_writers_keep_a_single_chain(pg_engine: sa.Engine) -> None:
    """Eight writers appending at once on PostgreSQL still produce one unbroken chain."""
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                with pg_engine.begin() as connection:
                    for k in range(3):
                        audit.record(
                            connection,
                            AuditKind.ORDER_SENDING,
                            T0 + timedelta(seconds=i),
                            external_property_id=f"W{n}",
                            detail={"writer": n, "i": i, "k": k},
                        )
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = all_rows(pg_engine)
    assert [r["id"] for r in rows] == list(range(1, 8 * 15 * 3 + 1))
    # The three rows of one transaction are adjacent: appends are serialised per transaction.
    for first in range(0, len(rows), 3):
        assert (
            len({(r["external_property_id"], r["detail"]["i"]) for r in rows[first : first + 3]})
            == 1
        )
    assert _verify(pg_engine) == (True, 360, None)


def test_stale_repeatable_read_writer_fails_instead_of_forking(pg_engine: sa.Engine) -> None:
    """A REPEATABLE READ writer whose snapshot predates another append gets an error, no fork."""
    record_rows(pg_engine, 1)
    with pg_engine.connect() as stale:
        stale = stale.execution_options(isolation_level="REPEATABLE READ")
        with stale.begin():
            stale.execute(sa.select(audit_log.c.id)).all()  # takes the snapshot
            record_rows(pg_engine, 1, start=T0 + timedelta(hours=1))  # another writer commits
            with pytest.raises(sa.exc.OperationalError, match="could not serialize"):
                audit.record(stale, AuditKind.ORDER_SENDING, T0, detail={})
    assert _verify(pg_engine) == (True, 2, None)


def test_an_insert_only_role_can_append_but_not_touch_the_chain(pg_database: str) -> None:
    """With INSERT and SELECT only, a role appends (the hashing trigger is SECURITY DEFINER)."""
    role = f"propready_app_{uuid.uuid4().hex[:8]}"
    engine = create_state_engine(pg_database)
    try:
        migrate.upgrade(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE ROLE {role}")
            connection.exec_driver_sql(f"GRANT INSERT, SELECT ON audit_log TO {role}")
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SET LOCAL ROLE {role}")
            audit.record(connection, AuditKind.ORDER_SENDING, T0, detail={"by": role})
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SET LOCAL ROLE {role}")
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                connection.exec_driver_sql("UPDATE audit_chain_head SET xact_id = 0")
        assert _verify(engine) == (True, 1, None)
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{pg_database.rsplit("/", 1)[1]}" WITH (FORCE)')  # type: ignore[arg-type]
            admin.execute(f"DROP ROLE IF EXISTS {role}")  # type: ignore[arg-type]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_rows_written_before_the_migration_are_chained(
    dialect: str, pg_database: str, tmp_path: Path
) -> None:
    """Audit rows that existed before revision 0003 are chained by it and verify."""
    url = pg_database if dialect == "postgresql" else f"sqlite:///{tmp_path / 'state.db'}"
    engine = create_state_engine(url)
    try:
        migrate.upgrade(engine, "0002")
        with engine.begin() as connection:
            for n in range(3):
                connection.execute(
                    sa.text(
                        "INSERT INTO audit_log (at, kind, external_property_id, host, detail)"
                        " VALUES (:at, 'trigger_fired', :p, 'old-host', :detail)"
                    ).bindparams(sa.bindparam("at", type_=audit_log.c.at.type)),
                    {"at": T0 + timedelta(minutes=n), "p": f"P{n}", "detail": f'{{"n": {n}}}'},
                )
        migrate.upgrade(engine)
        record_rows(engine, 1)
        assert _verify(engine) == (True, 4, None)
    finally:
        engine.dispose()


def test_buffered_rows_are_appended_in_order_and_chained(state_engine: sa.Engine) -> None:
    """Rows recorded inside audit.buffered() land together, in order, in one valid chain."""
    at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    with state_engine.begin() as connection:
        audit.record(connection, AuditKind.RULES_LOADED, at, detail={"n": -1})
        with audit.buffered(connection):
            for n in range(5):
                audit.record(connection, AuditKind.ORDER_SENDING, at, detail={"n": n})
            # Nothing is written until the block ends.
            assert (
                connection.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar() == 1
            )
    with state_engine.connect() as connection:
        rows = connection.execute(
            sa.select(audit_log.c.kind, audit_log.c.detail).order_by(audit_log.c.id)
        ).all()
    assert [(kind, detail["n"]) for kind, detail in rows] == [
        ("rules_loaded", -1),
        *((AuditKind.ORDER_SENDING, n) for n in range(5)),
    ]
    assert _verify(state_engine) == (True, 6, None)


def test_buffered_rows_are_dropped_with_a_failed_block(state_engine: sa.Engine) -> None:
    """A block that raises writes none of its buffered rows, and the buffer is gone afterwards."""
    at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def failing_batch() -> None:
        with state_engine.begin() as connection, audit.buffered(connection):
            audit.record(connection, AuditKind.ORDER_PARKED, at)
            raise RuntimeError("batch failed")

    with pytest.raises(RuntimeError, match="batch failed"):
        failing_batch()
    with state_engine.begin() as connection:
        audit.record(connection, AuditKind.ORDER_PLACED, at)
    with state_engine.connect() as connection:
        assert list(connection.execute(sa.select(audit_log.c.kind)).scalars()) == ["order_placed"]


def test_record_refuses_a_kind_outside_the_enum(state_engine: sa.Engine) -> None:
    """A misspelt kind is refused before it is written (the views would never match it)."""
    at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    with state_engine.begin() as connection, pytest.raises(ValueError, match="AuditKind"):
        audit.record(connection, "order_placd", at)  # type: ignore[arg-type]
    assert all_rows(state_engine) == []
