"""Helpers for cycle tests: a tidy PM database, settings, and components over real adapters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from propready.adapters.catalog_file import load_catalog
from propready.adapters.planomatic import PlanomaticClient
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.source import create_source_engine
from propready.adapters.store.engine import create_state_engine
from propready.service import Components, Pacer
from propready.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SECRET_CODE = "7391"
API_KEY = "sandbox-key"

PM_TABLE = sa.Table(
    "homes",
    sa.MetaData(),
    sa.Column("code", sa.String, primary_key=True),
    sa.Column("status", sa.String),
    sa.Column("street", sa.String),
    sa.Column("city", sa.String),
    sa.Column("state", sa.String),
    sa.Column("zip", sa.String),
    sa.Column("kind", sa.String),
    sa.Column("beds", sa.Integer),
    sa.Column("final_date", sa.String),
    sa.Column("lockbox", sa.String),
)
QUERY = (
    "SELECT code AS external_property_id, status, street, city, state, zip AS postal_code, "
    "kind AS property_type, beds AS bedrooms, final_date AS construction_final_date, "
    "'lockbox_code' AS method_of_access, lockbox AS access_code, 'Front door' AS lockbox_location, "
    "'Pat Leasing' AS onsite_contact_name, '+1 303-555-0100' AS onsite_contact_phone, "
    "1 AS vacant, 'investment_entity_1' AS billing_entity_slug FROM homes"
)


def home(code: str, status: str = "Occupied", **values: Any) -> dict[str, Any]:
    row = {
        "code": code,
        "status": status,
        "street": "4821 W Mulberry Dr",
        "city": "Denver",
        "state": "CO",
        "zip": "80205",
        "kind": "single_family",
        "beds": 3,
        "final_date": None,
        "lockbox": SECRET_CODE,
    }
    row.update(values)
    return row


class PmDatabase:
    """A small property-management database the tests edit between cycles."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        PM_TABLE.metadata.drop_all(self.engine)
        PM_TABLE.metadata.create_all(self.engine)

    def insert(self, *rows: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            connection.execute(PM_TABLE.insert(), list(rows))

    def set(self, code: str, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(PM_TABLE.update().where(PM_TABLE.c.code == code).values(**values))

    def close(self) -> None:
        self.engine.dispose()


def make_settings(state_url: str, pm_url: str, base_url: str, **orders: Any) -> Settings:
    return Settings(
        state={"url": state_url},
        source={"url": pm_url, "query": QUERY, "timezone": "America/Denver", "batch_size": 7},
        rules={"path": REPO / "rules"},
        orders=orders,
        planomatic={"base_url": base_url, "api_key": API_KEY, "requests_per_minute": 6000},
    )


@contextmanager
def wired(settings: Settings, transport: httpx.BaseTransport | None = None) -> Iterator[Components]:
    catalog = load_catalog(settings.rules.catalog_path)
    state = create_state_engine(settings.state.url)
    source = create_source_engine(settings.source.url)
    client = PlanomaticClient(
        settings.planomatic.base_url,
        settings.planomatic.api_key.get_secret_value(),
        timeout_seconds=2,
        transport=transport,
    )
    try:
        yield Components(
            settings=settings,
            state=state,
            source=source,
            rules=load_rule_set(settings.rules.path, catalog),
            catalog=catalog,
            client=client,
            pacer=Pacer(settings.planomatic.requests_per_minute),
        )
    finally:
        client.close()
        state.dispose()
        source.dispose()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 27, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now
