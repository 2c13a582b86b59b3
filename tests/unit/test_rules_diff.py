"""The rules page's comparison is bounded: the rows it lists and the time it reads."""

from __future__ import annotations

from collections.abc import Iterator

from propready.core.facts import RowProblem
from propready.core.model import PropertySnapshot
from propready.core.simulation import Outcome
from propready.service.preflight import HomeNow
from propready.service.rules_diff import Compared, rules_diff


def _home(n: int, changed: bool) -> Compared:
    outcome = Outcome(f"H{n}", None, None, "no trigger is true now")
    change = (["photos x20"], ["photos x25"]) if changed else None
    return Compared(HomeNow(PropertySnapshot(f"H{n}", {}), outcome), outcome, change)


class Homes:
    """A stream of homes, every third one changed, every tenth unreadable; knows if closed."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.closed = False

    def __iter__(self) -> Iterator[Compared | RowProblem]:
        return self

    def __next__(self) -> Compared | RowProblem:
        if self.count == 0:
            raise StopIteration
        self.count -= 1
        if self.count % 10 == 0:
            return RowProblem(None, "external_property_id", "the row has no property id")
        return _home(self.count, changed=self.count % 3 == 0)

    def close(self) -> None:
        self.closed = True


def test_every_home_is_counted_and_only_the_first_changes_are_listed() -> None:
    homes = Homes(100)
    diff = rules_diff(homes, ("live1", "cand1"), keep=5, time_limit=60)
    assert (diff.homes, diff.unreadable, diff.changed) == (90, 10, 30)
    assert len(diff.rows) == 5
    assert diff.rows[0]["gained"] == "photos x20"
    assert diff.rows[0]["lost"] == "photos x25"
    assert not diff.stopped_early
    assert (diff.live_version, diff.candidate_version) == ("live1", "cand1")
    assert homes.closed


def test_reading_stops_at_the_time_limit_and_says_so() -> None:
    ticks = iter(range(1000))
    homes = Homes(100)
    diff = rules_diff(homes, ("a", "b"), keep=500, time_limit=7, clock=lambda: next(ticks))
    assert diff.stopped_early
    assert diff.homes + diff.unreadable == 8  # one home per tick until past the deadline
    assert homes.closed  # the source's read ends at once
    assert homes.count == 92
