"""The bundled demo PM database: a Yardi-flavoured SQLite file and its simulated turnover.

The schema is deliberately foreign (`scode`, `sstatus`, `dtconstructionfinal`, ...): propready
reads it through the column aliases of `DEMO_SOURCE_QUERY`, the way it reads a real customer's
PM database. `create_demo_pm_database` writes a portfolio of homes; each call to
`advance_demo_pm_database` moves a few of them one step along the turnover cycle

    Occupied -> Notice Unrented -> Vacant Unrented Not Ready -> Vacant Unrented Ready
      ^                                                             |
      +---------------- Occupied <- Vacant Rented Ready <-----------+
    Under Construction (final date entered) -> Vacant Unrented Not Ready

so that both demo triggers (status reaches "Vacant Unrented Ready", a construction final date is
entered) rise, fall and re-arm. Everything is deterministic: `now` and the seed are parameters.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

DEMO_SOURCE_QUERY = """\
SELECT scode AS external_property_id, sstatus AS status,
  saddr1 AS street, saddr2 AS street2, scity AS city, sstate AS state, szipcode AS postal_code,
  dlatitude AS latitude, dlongitude AS longitude,
  CASE sunittype WHEN 'SFR' THEN 'single_family' WHEN 'CONDO' THEN 'condo_townhouse'
    WHEN 'TOWNHOME' THEN 'condo_townhouse' WHEN 'DUPLEX' THEN 'duplex_townhouse' END
    AS property_type,
  ibedrooms AS bedrooms, dbathrooms AS bathrooms, dsqft AS square_footage, dmarketrent AS price,
  CASE WHEN sstatus IN ('Occupied', 'Notice Unrented') THEN 0 ELSE 1 END AS vacant,
  dtconstructionfinal AS construction_final_date, saccessmethod AS method_of_access,
  slockboxcode AS access_code, slockboxlocation AS lockbox_location,
  sagentname AS onsite_contact_name, sagentphone AS onsite_contact_phone,
  sagentemail AS onsite_contact_email, sentity AS billing_entity_slug,
  sunittype AS unit_type, dtupdated AS updated_at
FROM unit"""

# Written as literal DDL: the declared types (DATE, TIMESTAMP, NUMERIC) are part of the foreign
# schema, and SQLAlchemy's own SQLite date types would store values in their own text format.
UNIT_DDL = """\
CREATE TABLE unit (
  scode TEXT PRIMARY KEY,
  sstatus TEXT NOT NULL,
  saddr1 TEXT NOT NULL, saddr2 TEXT, scity TEXT NOT NULL, sstate TEXT NOT NULL,
  szipcode TEXT NOT NULL,
  dlatitude REAL, dlongitude REAL,
  sunittype TEXT NOT NULL,
  ibedrooms INTEGER, dbathrooms REAL, dsqft INTEGER, dmarketrent NUMERIC,
  dtconstructionfinal DATE NULL,
  saccessmethod TEXT NOT NULL,
  slockboxcode TEXT, slockboxlocation TEXT,
  sagentname TEXT NOT NULL, sagentphone TEXT NOT NULL, sagentemail TEXT,
  sentity TEXT NOT NULL,
  dtupdated TIMESTAMP NOT NULL
)"""

UNIT_COLUMNS = (
    "scode", "sstatus", "saddr1", "saddr2", "scity", "sstate", "szipcode", "dlatitude",
    "dlongitude", "sunittype", "ibedrooms", "dbathrooms", "dsqft", "dmarketrent",
    "dtconstructionfinal", "saccessmethod", "slockboxcode", "slockboxlocation", "sagentname",
    "sagentphone", "sagentemail", "sentity", "dtupdated",
)  # fmt: skip
# Untyped columns: values pass through as the plain text and numbers SQLite stores.
_UNIT = sa.table("unit", *(sa.column(name) for name in UNIT_COLUMNS))

OCCUPIED = "Occupied"
NOTICE = "Notice Unrented"
NOT_READY = "Vacant Unrented Not Ready"
READY = "Vacant Unrented Ready"
RENTED_READY = "Vacant Rented Ready"
UNDER_CONSTRUCTION = "Under Construction"
DOWN = "Down"
STATUSES = (OCCUPIED, NOTICE, NOT_READY, READY, RENTED_READY, UNDER_CONSTRUCTION, DOWN)

# Share of the starting portfolio per status; Occupied takes whatever is left.
STARTING_STATUS_SHARES = {
    NOTICE: 0.12, NOT_READY: 0.12, READY: 0.05, RENTED_READY: 0.02,
    UNDER_CONSTRUCTION: 0.08, DOWN: 0.01,
}  # fmt: skip


@dataclass(frozen=True)
class Market:
    code: str
    city: str
    state: str
    area_code: str
    latitude: float
    longitude: float
    zip_codes: tuple[str, ...]
    rent_per_sqft: float
    weight: int  # relative share of the portfolio


MARKETS = (
    Market("DEN", "Denver", "CO", "303", 39.7392, -104.9903,
           ("80204", "80205", "80210", "80211", "80219", "80220", "80224", "80237"), 1.45, 8),
    Market("PHX", "Phoenix", "AZ", "602", 33.4484, -112.0740,
           ("85006", "85008", "85016", "85018", "85020", "85032", "85041", "85044"), 1.20, 14),
    Market("ATL", "Atlanta", "GA", "404", 33.7490, -84.3880,
           ("30306", "30307", "30310", "30311", "30312", "30315", "30316", "30318"), 1.25, 16),
    Market("CLT", "Charlotte", "NC", "704", 35.2271, -80.8431,
           ("28203", "28205", "28206", "28208", "28209", "28210", "28211", "28212"), 1.15, 10),
    Market("DAL", "Dallas", "TX", "214", 32.7767, -96.7970,
           ("75204", "75206", "75208", "75211", "75214", "75218", "75228", "75243"), 1.20, 12),
    Market("TPA", "Tampa", "FL", "813", 27.9506, -82.4572,
           ("33603", "33604", "33606", "33609", "33610", "33611", "33612", "33614"), 1.40, 10),
    Market("LAS", "Las Vegas", "NV", "702", 36.1699, -115.1398,
           ("89101", "89104", "89107", "89108", "89117", "89121", "89123", "89128"), 1.15, 9),
    Market("IND", "Indianapolis", "IN", "317", 39.7684, -86.1581,
           ("46201", "46203", "46205", "46208", "46219", "46220", "46224", "46227"), 0.95, 8),
    Market("RAL", "Raleigh", "NC", "919", 35.7796, -78.6382,
           ("27603", "27604", "27605", "27606", "27607", "27609", "27610", "27612"), 1.10, 6),
    Market("CMH", "Columbus", "OH", "614", 39.9612, -82.9988,
           ("43201", "43202", "43204", "43205", "43206", "43207", "43209", "43214"), 1.00, 7),
)  # fmt: skip

STREET_NAMES = (
    "Mulberry", "Aspen", "Juniper", "Cottonwood", "Willow", "Magnolia", "Sycamore", "Hickory",
    "Maple", "Cedar Ridge", "Pinon", "Mesquite", "Bluebonnet", "Dogwood", "Laurel", "Chestnut",
    "Birch", "Spruce", "Sagebrush", "Quail Run", "Meadowlark", "Foxglove", "Hawthorne", "Elm",
    "Briarwood", "Oak Hollow", "Sunset", "Harvest Moon", "Stonegate", "Prairie View", "Larkspur",
    "Red Bud", "Canyon Creek", "Whitetail", "Amberwood", "Copper Leaf", "Linden", "Tamarack",
)  # fmt: skip
STREET_SUFFIXES = ("Dr", "St", "Ave", "Ln", "Ct", "Way", "Blvd", "Pl", "Cir", "Rd", "Trl")
DIRECTIONS = ("N", "S", "E", "W")
FIRST_NAMES = (
    "Maria", "James", "Aisha", "Daniel", "Priya", "Marcus", "Elena", "Tyler", "Grace", "Luis",
    "Hannah", "Andre", "Sofia", "Kevin", "Nicole", "Omar", "Rachel", "Brandon", "Mei", "Carlos",
)  # fmt: skip
LAST_NAMES = (
    "Garcia", "Johnson", "Patel", "Nguyen", "Williams", "Brooks", "Ramirez", "Kim", "Foster",
    "Alvarez", "Turner", "Coleman", "Reyes", "Bennett", "Hughes", "Ortiz", "Sullivan", "Chen",
)  # fmt: skip
LOCKBOX_LOCATIONS = (
    "Front door knob", "Hose bib left of garage", "Gas meter", "Back gate latch",
    "Side door railing", "Water spigot by porch",
)  # fmt: skip
AGENTS_PER_MARKET = 3

# Status moves that fill each step's batch beyond its guaranteed ones: (from, to, weight).
# Weighted toward feeding "Vacant Unrented Not Ready", so the trigger keeps rising step after step.
FILLER_MOVES = (
    (NOTICE, NOT_READY, 5),  # the tenant moved out
    (OCCUPIED, NOTICE, 3),  # the tenant gave notice
    (RENTED_READY, OCCUPIED, 2),  # the new tenant moved in
    (UNDER_CONSTRUCTION, NOT_READY, 1),  # built (final date entered), now in make-ready
    (READY, RENTED_READY, 1),  # leased
)


@dataclass(frozen=True)
class DemoChange:
    """One field of one home that `advance_demo_pm_database` changed."""

    external_property_id: str
    field: str  # 'status' or 'construction_final_date'
    old: str | None
    new: str | None


def create_demo_pm_database(path: Path, *, homes: int = 300, seed: int = 7, now: datetime) -> None:
    """Create (or atomically replace) the demo PM database at `path` with `homes` units."""
    if homes < 0 or homes > 99_999:
        raise ValueError(f"homes must be between 0 and 99999, not {homes}")
    now = _utc(now)
    rng = random.Random(seed)
    rows = _generate_units(rng, homes, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.tmp")
    staging.unlink(missing_ok=True)
    with _engine(staging) as engine, engine.begin() as connection:
        connection.execute(sa.text(UNIT_DDL))
        if rows:
            connection.execute(sa.insert(_UNIT), rows)
    os.replace(staging, path)


def advance_demo_pm_database(
    path: Path, *, step: int, seed: int = 7, now: datetime, batch: int = 8
) -> list[DemoChange]:
    """Move about `batch` homes one step along the turnover cycle; return what changed.

    While candidates remain, every step makes at least 3 homes "Vacant Unrented Ready", enters at
    least 1 construction final date and lets at least 1 ready home fall back (so its trigger
    re-arms); the rest of the batch is spread over the other transitions. A home changes at most
    once per step, so a poller between steps sees every edge. The final date entered is the
    calendar date of `now` as given: pass `now` in the PM database's timezone.
    """
    if not path.exists():
        raise FileNotFoundError(path)
    updated_at = _timestamp(_utc(now))
    rng = random.Random(f"propready-demo:{seed}:{step}")
    query = sa.select(_UNIT.c.scode, _UNIT.c.sstatus, _UNIT.c.dtconstructionfinal)
    with _engine(path) as engine, engine.begin() as connection:
        units = [
            (str(scode), str(status), final_date)
            for scode, status, final_date in connection.execute(query.order_by(_UNIT.c.scode))
        ]
        changes = _plan_step(units, rng, batch, today=now.date().isoformat())
        for change in changes:
            column = "sstatus" if change.field == "status" else "dtconstructionfinal"
            connection.execute(
                sa.update(_UNIT)
                .where(_UNIT.c.scode == change.external_property_id)
                .values({column: change.new, "dtupdated": updated_at})
            )
    return changes


def describe_demo_pm_database(path: Path) -> dict[str, int]:
    """Count the units by status: every known status in lifecycle order (zeros included)."""
    if not path.exists():
        raise FileNotFoundError(path)
    query = sa.select(_UNIT.c.sstatus, sa.func.count()).group_by(_UNIT.c.sstatus)
    with _engine(path) as engine, engine.connect() as connection:
        found = {str(status): int(count) for status, count in connection.execute(query)}
    counts = {status: found.pop(status, 0) for status in STATUSES}
    counts.update(sorted(found.items()))
    return counts


def _plan_step(
    units: Sequence[tuple[str, str, str | None]], rng: random.Random, batch: int, today: str
) -> list[DemoChange]:
    """Pick this step's changes from (scode, status, final date) rows sorted by scode."""
    pools: dict[str, list[str]] = {status: [] for status in STATUSES}
    awaiting_final: list[str] = []
    for scode, status, final_date in units:
        if status == UNDER_CONSTRUCTION and final_date is None:
            awaiting_final.append(scode)
        else:
            pools.setdefault(status, []).append(scode)
    changes: list[DemoChange] = []

    def move(old_status: str, new_status: str) -> None:
        pool = pools[old_status]
        scode = pool.pop(rng.randrange(len(pool)))
        changes.append(DemoChange(scode, "status", old_status, new_status))

    for _ in range(min(len(pools[NOT_READY]), max(3, round(batch * 0.4)))):
        move(NOT_READY, READY)
    if awaiting_final:
        scode = awaiting_final.pop(rng.randrange(len(awaiting_final)))
        changes.append(DemoChange(scode, "construction_final_date", None, today))
    if pools[READY]:
        move(READY, rng.choices((RENTED_READY, OCCUPIED), weights=(3, 1))[0])
    # The rest of the batch: weighted among the transitions that still have candidates.
    for _ in range(batch - len(changes)):
        open_moves = [(old, new, w) for old, new, w in FILLER_MOVES if pools.get(old)]
        if not open_moves:
            break
        old, new, _weight = rng.choices(open_moves, weights=[w for *_, w in open_moves])[0]
        move(old, new)
    return sorted(changes, key=lambda change: (change.external_property_id, change.field))


def _generate_units(rng: random.Random, homes: int, now: datetime) -> list[dict[str, Any]]:
    agents = {market.code: _agents(rng, market) for market in MARKETS}
    statuses: list[str] = []
    for status, share in STARTING_STATUS_SHARES.items():
        statuses += [status] * round(homes * share)
    statuses = statuses[:homes] + [OCCUPIED] * (homes - len(statuses))
    rng.shuffle(statuses)
    markets = rng.choices(MARKETS, weights=[market.weight for market in MARKETS], k=homes)
    return [
        _unit(rng, index + 1, market, status, agents[market.code], now)
        for index, (market, status) in enumerate(zip(markets, statuses, strict=True))
    ]


def _agents(rng: random.Random, market: Market) -> list[tuple[str, str, str]]:
    agents = []
    for _ in range(AGENTS_PER_MARKET):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        phone = f"+1 {market.area_code}-555-01{rng.randrange(100):02d}"
        agents.append((f"{first} {last}", phone, f"{first}.{last}@example.com".lower()))
    return agents


def _unit(
    rng: random.Random,
    number: int,
    market: Market,
    status: str,
    agents: list[tuple[str, str, str]],
    now: datetime,
) -> dict[str, Any]:
    unit_type = rng.choices(("SFR", "TOWNHOME", "CONDO", "DUPLEX"), weights=(70, 12, 8, 10))[0]
    bedrooms = rng.choices((2, 3, 4, 5), weights=(25, 40, 25, 10))[0]
    if unit_type != "SFR":
        bedrooms = min(bedrooms, 3)
    bathrooms = min(3.5, max(1.0, bedrooms - 1 + rng.choice((0.0, 0.5, 1.0))))
    sqft = 900 + (bedrooms - 2) * 550 + rng.randrange(0, 650, 10)
    rent = round(sqft * market.rent_per_sqft * rng.uniform(0.9, 1.1) / 5) * 5
    direction = f"{rng.choice(DIRECTIONS)} " if rng.random() < 0.4 else ""
    street = f"{rng.choice(STREET_NAMES)} {rng.choice(STREET_SUFFIXES)}"
    # About a third of the non-SFR homes (10% of the portfolio) carry a unit line.
    street2 = f"Unit {rng.choice('ABCD')}" if unit_type != "SFR" and rng.random() < 0.35 else None
    access = rng.choices(("lockbox_code", "keypad", "rently"), weights=(50, 25, 25))[0]
    final_date = None
    if status != UNDER_CONSTRUCTION and rng.random() < 0.04:
        final_date = (now - timedelta(days=rng.randrange(30, 400))).date().isoformat()
    agent_name, agent_phone, agent_email = rng.choice(agents)
    return {
        "scode": f"{market.code}-{number:05d}",
        "sstatus": status,
        "saddr1": f"{rng.randrange(100, 10000)} {direction}{street}",
        "saddr2": street2,
        "scity": market.city,
        "sstate": market.state,
        "szipcode": rng.choice(market.zip_codes),
        "dlatitude": round(market.latitude + rng.uniform(-0.12, 0.12), 6),
        "dlongitude": round(market.longitude + rng.uniform(-0.15, 0.15), 6),
        "sunittype": unit_type,
        "ibedrooms": bedrooms,
        "dbathrooms": bathrooms,
        "dsqft": sqft,
        "dmarketrent": rent,
        "dtconstructionfinal": final_date,
        "saccessmethod": access,
        "slockboxcode": f"{rng.randrange(10000):04d}" if access != "rently" else None,
        "slockboxlocation": rng.choice(LOCKBOX_LOCATIONS) if access == "lockbox_code" else None,
        "sagentname": agent_name,
        "sagentphone": agent_phone,
        "sagentemail": agent_email,
        "sentity": rng.choices(("investment_entity_1", "investment_entity_2"), (3, 2))[0],
        "dtupdated": _timestamp(now - timedelta(seconds=rng.randrange(30 * 24 * 3600))),
    }


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, not {moment!r}")
    return moment.astimezone(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


@contextmanager
def _engine(path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        yield engine
    finally:
        engine.dispose()
