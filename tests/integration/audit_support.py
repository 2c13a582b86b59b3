"""Helpers for the audit tests: rows written through audit.record, the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from propready.adapters.store import audit
from propready.adapters.store.schema import audit_log
from tests.integration.cycle_support import QUERY, REPO

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def record_rows(engine: sa.Engine, count: int, *, start: datetime = T0) -> None:
    """`count` ordinary audit rows, one transaction each, a minute apart."""
    for n in range(count):
        with engine.begin() as connection:
            audit.record(
                connection,
                "trigger_fired",
                start + timedelta(minutes=n),
                external_property_id=f"P{n % 3}",
                trigger_name="vacant_ready",
                event_id=n + 1,
                detail={"kind": "rising_edge", "edge_seq": n, "note": "ünïcode ✓", "x": 1.5},
            )


def all_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            dict(r)
            for r in connection.execute(sa.select(audit_log).order_by(audit_log.c.id)).mappings()
        ]


@contextmanager
def superuser_bypass(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection on which the append-only triggers do not fire, as a superuser could get.

    PostgreSQL: session_replication_role = replica (ordinary triggers are skipped). SQLite: the
    triggers are dropped for the duration and recreated afterwards.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
            yield connection
            return
        triggers = connection.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"
        ).all()
        for name, _sql in triggers:
            connection.exec_driver_sql(f"DROP TRIGGER {name}")
        yield connection
        for _name, sql in triggers:
            connection.exec_driver_sql(sql)


def write_config(tmp_path: Path, state_url: str) -> Path:
    config = tmp_path / "propready.toml"
    state = state_url.replace("postgresql://", "postgresql+psycopg://")
    config.write_text(
        f'[state]\nurl = "{state}"\n'
        f'[source]\nurl = "sqlite:///{tmp_path / "pm.db"}"\nquery = "{QUERY}"\n'
        f'[rules]\npath = "{REPO / "rules"}"\n'
        '[planomatic]\nbase_url = "http://127.0.0.1:9"\n'
        '[log]\nformat = "json"\n'
    )
    return config


def propready(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PROPREADY_CONFIG": str(config),
        "PROPREADY_PLANOMATIC__API_KEY": "sandbox-key",
    }
    return subprocess.run(
        [sys.executable, "-m", "propready", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
