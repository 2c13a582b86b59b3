"""The demo's write-back: delivered orders fill a column of the demo PM database.

`prepare_demo_writeback(pm_url)` adds the column `sphotosurl` to the demo's `unit` table (once)
and returns the `[writeback]` settings that fill it with each delivered order's photo link, the
way an operator would point propready at their own PM database. `photo_links(pm_url)` reads the
column back, for the demo's closing report.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

COLUMN = "sphotosurl"
# Idempotent by design (RUNBOOK, "Write-back to the PM system"): it sets a value.
DEMO_WRITEBACK_STATEMENT = (
    f"UPDATE unit SET {COLUMN} = :photo_manage_link WHERE scode = :external_property_id"
)


def prepare_demo_writeback(pm_url: str) -> dict[str, Any]:
    """Add the photo-link column to the demo PM database if missing; the [writeback] section."""
    engine = sa.create_engine(pm_url)
    try:
        with engine.begin() as connection:
            columns = {column["name"] for column in sa.inspect(connection).get_columns("unit")}
            if COLUMN not in columns:
                connection.exec_driver_sql(f"ALTER TABLE unit ADD COLUMN {COLUMN} TEXT")
    finally:
        engine.dispose()
    return {
        "url": pm_url,
        "statement": DEMO_WRITEBACK_STATEMENT,
        "interval_seconds": 2,
        "retry_base_seconds": 2,
        "retry_max_seconds": 30,
    }


def photo_links(pm_url: str) -> dict[str, str]:
    """Homes whose photo link was written back, and the link."""
    engine = sa.create_engine(pm_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(f"SELECT scode, {COLUMN} FROM unit WHERE {COLUMN} IS NOT NULL")
            ).all()
    finally:
        engine.dispose()
    return {str(code): str(link) for code, link in rows}
