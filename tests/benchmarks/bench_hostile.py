"""Benchmark: a full pass over 1,000,000 PM rows of which 1% are hostile, against the clean pass.

The table is bench_poll.py's production-like Yardi `unit` table (uncorrelated cursor). In the same
run, on a fresh PostgreSQL state database each time:
  (clean)   the first full pass over the clean table;
  then 1% of the rows (every 100th key) are made hostile, six kinds in turn: a NaN rent, a
  control character in the street, a 10,000-character street, a latitude of 999, an absurd
  square footage, and an external_property_id shared with another row;
  (hostile) the first full pass over the hostile table.
It checks that the pass completes, that every good row is stored and no hostile one is, and
prints the hostile pass's time as a ratio of the clean pass's (issue 17: report it).

    .venv/bin/python tests/benchmarks/bench_hostile.py [--homes 1000000] [--keep]

It creates the databases propready_bench_hpm and propready_bench_hstate on 127.0.0.1:5432 and
drops them afterwards (unless --keep).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_poll import BUILD, NOW, QUERY, UPDATED, admin, rss_mb

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.source import create_source_engine
from propready.adapters.store import migrate
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import property_state, source_quarantine
from propready.service import Components, CycleSummary, Pacer, poll
from propready.settings import Settings

ADMIN_BASE = os.environ.get("PROPREADY_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
BASE = ADMIN_BASE.rsplit("/", 1)[0]
PM_DB, STATE_DB = "propready_bench_hpm", "propready_bench_hstate"
REPO = Path(__file__).resolve().parents[2]

# Every 100th key is made hostile; (hmy / 100) % 6 picks the kind. The shared-id kind gives the
# row the code of its neighbour (hmy + 1), so both rows of that id must be held.
POISON = """
UPDATE unit SET dmarketrent = 'NaN' WHERE hmy % 100 = 0 AND (hmy / 100) % 6 = 0;
UPDATE unit SET saddr1 = saddr1 || chr(1) || 'x' WHERE hmy % 100 = 0 AND (hmy / 100) % 6 = 1;
UPDATE unit SET saddr1 = repeat('Long Street ', 834) WHERE hmy % 100 = 0 AND (hmy / 100) % 6 = 2;
UPDATE unit SET dlatitude = 999 WHERE hmy % 100 = 0 AND (hmy / 100) % 6 = 3;
UPDATE unit SET dsqft = 2000000000 WHERE hmy % 100 = 0 AND (hmy / 100) % 6 = 4;
UPDATE unit AS u SET scode = n.scode FROM unit AS n
 WHERE u.hmy % 100 = 0 AND (u.hmy / 100) % 6 = 5 AND n.hmy = u.hmy + 1;
"""
HOSTILE_IDS = """
SELECT scode FROM unit WHERE hmy % 100 = 0
UNION SELECT scode FROM unit GROUP BY scode HAVING count(*) > 1
"""


def first_pass(pm_url: str, homes: int, label: str) -> tuple[float, set[str], int]:
    """Seconds of a first full pass on a fresh state database, the ids stored, rows held."""
    admin(f'DROP DATABASE IF EXISTS "{STATE_DB}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{STATE_DB}"')
    state_url = f"{BASE.replace('postgresql://', 'postgresql+psycopg://')}/{STATE_DB}"
    state = create_state_engine(state_url)
    migrate.upgrade(state)
    settings = Settings(
        state={"url": state_url},
        source={
            "url": pm_url,
            "query": QUERY,
            "cursor_column": "updated_at",
            "timezone": "America/Denver",
            "batch_size": 5000,
        },
        rules={"path": REPO / "rules"},
        orders={"mode": "dry_run"},
    )
    catalog = load_catalog()
    source = create_source_engine(pm_url)
    parts = Components(
        settings=settings,
        state=state,
        source=source,
        rules=load_rule_set(REPO / "rules", catalog),
        catalog=catalog,
        client=None,
        pacer=Pacer(50),
    )
    summary = CycleSummary()
    try:
        started = time.perf_counter()
        poll(parts, lambda: NOW, summary, full_pass=True)
        seconds = time.perf_counter() - started
        with state.connect() as connection:
            stored = set(connection.scalars(sa.select(property_state.c.external_property_id)))
            held = connection.scalar(sa.select(sa.func.count()).select_from(source_quarantine))
    finally:
        state.dispose()
        source.dispose()
    print(
        f"  {label:<28} {seconds:8.2f} s   rows={summary.rows} stored={len(stored)} "
        f"held={held} peak RSS {rss_mb():.0f} MB",
        flush=True,
    )
    return seconds, stored, int(held or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--homes", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args()
    homes = args.homes
    pm_url = f"{BASE}/{PM_DB}"
    try:
        admin(f'DROP DATABASE IF EXISTS "{PM_DB}" WITH (FORCE)')
        admin(f'CREATE DATABASE "{PM_DB}"')
        with psycopg.connect(pm_url, autocommit=True) as connection:
            updated = UPDATED["uncorrelated"].format(homes=homes)
            connection.execute(BUILD.format(homes=homes, updated=updated))  # type: ignore[arg-type]
            connection.execute("VACUUM ANALYZE unit")
        print(f"built {homes:,} homes")
        clean, clean_ids, _ = first_pass(pm_url, homes, "(clean) first full pass")
        with psycopg.connect(pm_url, autocommit=True) as connection:
            connection.execute(POISON)  # type: ignore[arg-type]
            connection.execute("VACUUM ANALYZE unit")
            hostile_ids = {row[0] for row in connection.execute(HOSTILE_IDS)}  # type: ignore[arg-type]
            all_ids = {row[0] for row in connection.execute("SELECT scode FROM unit")}
        hostile, stored, held = first_pass(pm_url, homes, "(hostile) first full pass, 1%")
        good = all_ids - hostile_ids
        missing = good - stored
        leaked = stored & hostile_ids
        assert len(clean_ids) == homes, f"the clean pass stored {len(clean_ids)} of {homes}"
        assert not missing, f"{len(missing)} good homes were not stored, e.g. {sorted(missing)[:3]}"
        assert not leaked, f"{len(leaked)} hostile homes were stored, e.g. {sorted(leaked)[:3]}"
        print(
            f"  => hostile pass {hostile / clean:.2f}x the clean pass; {len(good):,} good homes "
            f"all stored, {len(hostile_ids):,} hostile ids held ({held:,} quarantine rows); "
            f"peak RSS {rss_mb():.0f} MB; load average {os.getloadavg()[0]:.2f}"
        )
    finally:
        if not args.keep:
            for name in (PM_DB, STATE_DB):
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
