"""The demo PM database takes the write-back: a column prepared once, filled per delivered
order by the real write-back step, while the demo's source query keeps working."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from propready.adapters.store.engine import create_state_engine
from propready.demo.pm_database import DEMO_SOURCE_QUERY, create_demo_pm_database
from propready.demo.writeback import photo_links, prepare_demo_writeback
from propready.service.writeback import run_writebacks
from propready.settings import Settings
from tests.integration.writeback_support import T0, delivered_order


def test_the_demo_pm_database_gets_its_photo_links_written_back(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """Prepared twice (the column added once), then a delivered order of a demo home fills
    that home's sphotosurl; the source query still reads every home."""
    pm_path = tmp_path / "pm.db"
    create_demo_pm_database(pm_path, homes=5, now=datetime(2026, 12, 1, tzinfo=UTC))
    pm_url = f"sqlite:///{pm_path}"
    section = prepare_demo_writeback(pm_url)
    assert prepare_demo_writeback(pm_url) == section
    state_path = tmp_path / "state.db"
    state_path.write_bytes(sqlite_template.read_bytes())
    state_url = f"sqlite:///{state_path}"
    settings = Settings(
        state={"url": state_url},
        source={"url": pm_url, "query": DEMO_SOURCE_QUERY},
        writeback=section,
    )
    engine = sa.create_engine(pm_url)
    with engine.connect() as connection:
        first_home = connection.execute(sa.text("SELECT min(scode) FROM unit")).scalar_one()
        assert len(connection.execute(sa.text(DEMO_SOURCE_QUERY)).all()) == 5
    engine.dispose()
    state = create_state_engine(state_url)
    try:
        delivered_order(state, 1, property_id=str(first_home))
        assert run_writebacks(state, settings, "demo", lambda: T0).done == 1
    finally:
        state.dispose()
    assert photo_links(pm_url) == {str(first_home): "https://media.example/orders/1"}
