"""Write-back tests' helpers: a writable PM database (PostgreSQL or SQLite), delivered orders
in the state database, and settings.

The PM side has two tables the documented statements write to:

- `units`: one row per home; the UPDATE statement sets `photos_url` (idempotent by design);
- `media`: one row per order; the upsert statement keys it on the order id. Its `writes`
  column counts how many times the statement ran (it is the one thing that is not idempotent
  on purpose), so a test tells "ran once" from "ran twice with one effect".
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import audit_log, orders
from propready.adapters.store.writebacks import enqueue_writeback
from propready.core.writeback import WritebackParams
from propready.settings import Settings
from tests.conftest import PG_BASE, _pg_admin

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TARGET_PASSWORD = "pm-s3cret-pw"  # trust auth ignores it; it must never show up anywhere

UPSERT = (
    "INSERT INTO media (order_id, property_id, link, photo_count, delivered_at, writes) "
    "VALUES (:external_order_id, :external_property_id, :photo_manage_link, :photo_count, "
    ":delivered_at, 1) "
    "ON CONFLICT (order_id) DO UPDATE SET link = excluded.link, "
    "photo_count = excluded.photo_count, writes = media.writes + 1"
)
UPDATE = "UPDATE units SET photos_url = :photo_manage_link WHERE unit_id = :external_property_id"


@dataclass
class PmTarget:
    """A writable PM database: `url` for [writeback] url, `engine` for the test's own reads."""

    kind: str
    url: str
    engine: sa.Engine

    def create_tables(self) -> None:
        with self.engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE units (unit_id VARCHAR(50) PRIMARY KEY, photos_url TEXT)"
            )
            when = "TIMESTAMPTZ" if self.kind == "postgresql" else "TEXT"
            connection.exec_driver_sql(
                "CREATE TABLE media (order_id VARCHAR(50) PRIMARY KEY, property_id VARCHAR(50), "
                f"link TEXT, photo_count INTEGER, delivered_at {when}, writes INTEGER NOT NULL)"
            )

    def add_units(self, *unit_ids: str) -> None:
        with self.engine.begin() as connection:
            for unit_id in unit_ids:
                connection.execute(
                    sa.text("INSERT INTO units (unit_id) VALUES (:u)"), {"u": unit_id}
                )

    def media(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM media ORDER BY order_id")).mappings()
            return {str(row["order_id"]): dict(row) for row in rows}

    def photos_urls(self) -> dict[str, str | None]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT unit_id, photos_url FROM units")).all()
            return {str(unit): url for unit, url in rows}


def pm_target(kind: str, tmp_path: Path, *, port: int = 5432) -> Iterator[PmTarget]:
    """A fresh PM database with the two tables; `port` lets a proxy stand in front."""
    if kind == "sqlite":
        path = tmp_path / "pm-target.db"
        engine = sa.create_engine(f"sqlite:///{path}")
        target = PmTarget(kind, f"sqlite:///{path}", engine)
        target.create_tables()
        yield target
        engine.dispose()
        return
    name = f"propready_pm_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    engine = sa.create_engine(f"{PG_BASE.replace('postgresql:', 'postgresql+psycopg:')}/{name}")
    url = f"postgresql+psycopg://root:{TARGET_PASSWORD}@127.0.0.1:{port}/{name}"
    target = PmTarget(kind, url, engine)
    target.create_tables()
    try:
        yield target
    finally:
        engine.dispose()
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings_for(
    state_url: str, target_url: str, statement: str = UPSERT, **extra: Any
) -> Settings:
    writeback: dict[str, Any] = {
        "url": target_url,
        "statement": statement,
        "timeout_seconds": 5,
        "retry_base_seconds": 60,
        "retry_max_seconds": 600,
        "give_up_after_hours": 48,
    }
    writeback.update(extra)
    return Settings(
        state={"url": state_url},
        source={"url": "sqlite:///unused-source.db", "query": "SELECT 1"},
        writeback=writeback,
    )


def params_for(n: int) -> WritebackParams:
    return WritebackParams(
        external_property_id=f"DEN-{n:04d}",
        external_order_id=f"pr-{n:04d}",
        vendor_order_id=str(9000 + n),
        order_status="completed",
        delivered_at=T0 - timedelta(minutes=5),
        photo_manage_link=f"https://media.example/orders/{n}",
        zillow_3d_link=None,
        photo_count=25,
    )


def delivered_order(state: sa.Engine, n: int, at: datetime = T0) -> int:
    """An order row as the lifecycle step leaves it, with its write-back queued in the same
    transaction (as the lead wires it); the order's id."""
    values = params_for(n)
    with state.begin() as connection:
        order_id = int(
            connection.execute(
                orders.insert()
                .values(
                    external_order_id=values.external_order_id,
                    external_property_id=values.external_property_id,
                    billing_entity_slug="investment_entity_1",
                    state="placed",
                    vendor_status="completed",
                    vendor_order_id=values.vendor_order_id,
                    payload={},
                    created_at=at - timedelta(days=2),
                    window_end=at - timedelta(days=1),
                    updated_at=at,
                )
                .returning(orders.c.id)
            ).scalar_one()
        )
        enqueue_writeback(connection, order_id, values, at)
    return order_id


def audit_rows(state: sa.Engine, kind: str) -> list[dict[str, Any]]:
    with state.connect() as connection:
        rows = connection.execute(
            sa.select(audit_log).where(audit_log.c.kind == kind).order_by(audit_log.c.id)
        ).mappings()
        return [dict(row) for row in rows]


def all_audit_text(state: sa.Engine) -> str:
    with state.connect() as connection:
        return "\n".join(
            f"{row.kind} {row.detail}"
            for row in connection.execute(sa.select(audit_log.c.kind, audit_log.c.detail))
        )
