"""How a candidate rule set would order differently from the live one, home by home, right now.

`simulate --rules` and the console's rules page share it: each source row is read through the
source adapter and typed as the poll does, decided by the live rules (with the order it would
get) and by the candidate, and compared (core/simulation.py `difference`). It sends nothing and
writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from propready.core.catalog import Catalog
from propready.core.facts import RowProblem
from propready.core.rule_tests import services_text
from propready.core.rules import RuleSet
from propready.core.simulation import Outcome, difference, simulate
from propready.service.preflight import HomeNow, ready_homes
from propready.settings import Settings


@dataclass(frozen=True, slots=True)
class Compared:
    """One home decided by both rule sets; `change` is (gained, lost) when they differ."""

    home: HomeNow  # the live rules' outcome, with the order it would get
    candidate: Outcome
    change: tuple[list[str], list[str]] | None

    @property
    def property_id(self) -> str:
        return self.home.property_id

    def row(self) -> dict[str, str | None]:
        """The row `simulate --rules` prints and the console shows."""
        live = self.home.outcome
        gained, lost = self.change or ([], [])
        return {
            "external_property_id": self.property_id,
            "live_rule": live.rule_id,
            "live_services": services_text(live.services),
            "candidate_rule": self.candidate.rule_id,
            "candidate_services": services_text(self.candidate.services),
            "gained": ", ".join(gained),
            "lost": ", ".join(lost),
        }


def compare_homes(
    settings: Settings,
    source: sa.Engine,
    live: RuleSet,
    catalog: Catalog,
    candidate: RuleSet,
    now: datetime,
    *,
    only: str | None = None,
    on_row: Callable[[], None] | None = None,
) -> Iterator[Compared | RowProblem]:
    """Each home (or only `only`) as both rule sets decide it now; SourceUnavailable when the
    query fails. A row that cannot be typed comes back as its RowProblem."""
    zone = settings.source.zone
    for home in ready_homes(settings, source, live, catalog, now, only=only, on_row=on_row):
        if isinstance(home, RowProblem):
            yield home
            continue
        other = simulate(candidate, home.snapshot, now, zone)
        yield Compared(home, other, difference(home.outcome, other))


@dataclass
class RulesDiff:
    """The homes whose order would change, the first `keep` of them, and what was read."""

    live_version: str
    candidate_version: str
    homes: int = 0
    unreadable: int = 0
    changed: int = 0
    rows: list[dict[str, str | None]] = field(default_factory=list)
    # Set when the comparison stopped at its time limit: only `homes` homes were compared.
    stopped_early: bool = False


def rules_diff(
    compared: Iterator[Compared | RowProblem],
    versions: tuple[str, str],
    *,
    keep: int,
    time_limit: float,
    clock: Callable[[], float] = time.monotonic,
) -> RulesDiff:
    """`compare_homes`' answers (live and candidate `versions`) as one bounded answer for a web
    page: at most `keep` changed homes listed, and at most `time_limit` seconds of reading
    (then `stopped_early`, with what was compared)."""
    diff = RulesDiff(*versions)
    deadline = clock() + time_limit
    try:
        for item in compared:
            if isinstance(item, RowProblem):
                diff.unreadable += 1
            else:
                diff.homes += 1
                if item.change is not None:
                    diff.changed += 1
                    if len(diff.rows) < keep:
                        diff.rows.append(item.row())
            if clock() > deadline:
                diff.stopped_early = True
                break
    finally:
        close = getattr(compared, "close", None)
        if close is not None:
            close()  # ends the source's read now, not when the generator is collected
    return diff
