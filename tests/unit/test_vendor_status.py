"""The vendor's status order: which of two pieces of news about an order is newer."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propready.core.vendor_status import (
    CANCELED_STATUSES,
    DELIVERED_RANK,
    RESCHEDULE_RANK,
    RESCHEDULE_STATUSES,
    STATUS_RANKS,
    StatusPoint,
    effective_status,
    is_newer,
    status_rank,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIFECYCLE = (
    "new_request", "ordered", "scheduling", "scheduled", "on_site", "post_processing",
    "notified", "completed",
)  # fmt: skip
KNOWN = sorted(STATUS_RANKS)
# deadline=None throughout: a machine shared with other test runs must not fail a pure test.
ALL_STATUSES = [*KNOWN, "hold", "something_new"]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_the_lifecycle_ranks_in_the_documented_order() -> None:
    """new_request < ordered < scheduling < scheduled < on_site < post_processing < delivered."""
    ranks = [status_rank(status) for status in LIFECYCLE]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == len(ranks)
    assert all(status_rank(s) == status_rank("canceled") for s in CANCELED_STATUSES)
    assert status_rank("committed") == status_rank("scheduled")
    assert status_rank("assembly") == status_rank("post_processing")
    assert status_rank("hold") is None
    assert status_rank(" Scheduled ") == status_rank("scheduled")


def test_an_event_stands_for_a_status_when_the_payload_has_none() -> None:
    """order_status wins; without it the event implies the status; unknown events imply none."""
    assert effective_status("on_site", "appointment.scheduled") == "on_site"
    assert effective_status(None, "order.delivered") == "completed"
    assert effective_status(None, "ORDER.CANCELED") == "canceled"
    assert effective_status(None, "appointment.unable_to_complete") == "pending_reschedule"
    assert effective_status(None, "order.teleported") is None
    assert effective_status(None, None) is None


@pytest.mark.parametrize(
    ("current", "incoming", "newer"),
    [
        # forward along the lifecycle, without times: the rank decides
        (StatusPoint("ordered"), StatusPoint("scheduled"), True),
        (StatusPoint("scheduled"), StatusPoint("ordered"), False),
        (StatusPoint("scheduled"), StatusPoint("scheduled"), False),
        (StatusPoint("scheduled"), StatusPoint("committed"), False),
        # an older status never overwrites a newer one, even with a later event time
        (StatusPoint("scheduled", at(1)), StatusPoint("ordered", at(2)), False),
        (StatusPoint("post_processing", at(1)), StatusPoint("new_request", at(2)), False),
        # the earlier event is never newer
        (StatusPoint("scheduled", at(5)), StatusPoint("post_processing", at(4)), False),
        # the same status, later: a rebooked appointment is news
        (StatusPoint("scheduled", at(1)), StatusPoint("scheduled", at(2)), True),
        (StatusPoint("scheduled", at(1)), StatusPoint("scheduled", at(1)), False),
        # a time on one side only: the rank decides
        (StatusPoint("scheduled", at(1)), StatusPoint("on_site"), True),
        (StatusPoint("on_site"), StatusPoint("scheduled", at(9)), False),
        # canceled ends everything, and wins over everything
        (StatusPoint("canceled"), StatusPoint("completed"), False),
        (StatusPoint("cancelled", at(1)), StatusPoint("scheduled", at(2)), False),
        (StatusPoint("completed", at(5)), StatusPoint("canceled", at(1)), True),
        (StatusPoint("canceled"), StatusPoint("canceled"), False),
        # unable to complete: back into a reschedule status, then on again
        (StatusPoint("on_site"), StatusPoint("pending_reschedule"), True),
        (StatusPoint("scheduled", at(1)), StatusPoint("unscheduled", at(2)), True),
        (StatusPoint("scheduled", at(2)), StatusPoint("pending_reschedule", at(1)), False),
        (StatusPoint("pending_reschedule"), StatusPoint("scheduled"), True),
        (StatusPoint("pending_reschedule"), StatusPoint("scheduling"), True),
        # ... but never back from a delivered order, nor back to anything else
        (StatusPoint("completed"), StatusPoint("pending_reschedule"), False),
        (StatusPoint("notified", at(1)), StatusPoint("pending_reschedule", at(2)), False),
        (StatusPoint("completed", at(1)), StatusPoint("scheduled", at(2)), False),
        # a later rebooking after a failed visit whose reschedule news has not arrived yet
        (StatusPoint("on_site", at(1)), StatusPoint("scheduled", at(3)), True),
        (StatusPoint("on_site", at(1)), StatusPoint("scheduling", at(2)), True),
        (StatusPoint("on_site"), StatusPoint("scheduled"), False),
        # unranked statuses need a later time; leaving one for a ranked status is progress
        (StatusPoint("scheduled"), StatusPoint("hold"), False),
        (StatusPoint("scheduled", at(1)), StatusPoint("hold", at(2)), True),
        (StatusPoint("hold"), StatusPoint("scheduled"), True),
        (StatusPoint("hold", at(3)), StatusPoint("scheduled", at(2)), False),
        # no status at all: nothing to apply; no current status: anything is news
        (StatusPoint("scheduled"), StatusPoint(None), False),
        (None, StatusPoint("ordered"), True),
        (StatusPoint(None), StatusPoint("hold"), True),
    ],
)
def test_is_newer(current: StatusPoint | None, incoming: StatusPoint, newer: bool) -> None:
    """The documented cases of design.md 8.5, one per row."""
    assert is_newer(current, incoming) is newer


points = st.builds(
    StatusPoint,
    st.sampled_from([*ALL_STATUSES, None]),
    st.none() | st.integers(0, 20).map(at),
)


@settings(deadline=None)
@given(points)
def test_nothing_is_newer_than_itself(point: StatusPoint) -> None:
    """Repeating a delivery never changes anything twice."""
    assert not is_newer(point, point)


@settings(deadline=None)
@given(points, points)
def test_canceled_is_an_end_state(current: StatusPoint, incoming: StatusPoint) -> None:
    """After canceled nothing is newer; a cancel is newer than any other status."""
    canceled_now = StatusPoint("canceled", current.event_at)
    assert not is_newer(canceled_now, incoming)
    if current.status is not None and current.status not in CANCELED_STATUSES:
        assert is_newer(current, StatusPoint("canceled", incoming.event_at))


@settings(deadline=None)
@given(points, points)
def test_a_status_goes_back_only_through_a_reschedule_before_delivery(
    current: StatusPoint, incoming: StatusPoint
) -> None:
    """A move to a lower rank is a reschedule of an undelivered order: into a reschedule
    status, or (later in time) to a status a reschedule leads to, never before scheduling."""
    old, new = status_rank(current.status), status_rank(incoming.status)
    if is_newer(current, incoming) and old is not None and new is not None and new < old:
        assert old < DELIVERED_RANK
        assert new >= RESCHEDULE_RANK
        if incoming.status not in RESCHEDULE_STATUSES:
            assert current.event_at is not None
            assert incoming.event_at is not None
            assert incoming.event_at > current.event_at


@settings(deadline=None)
@given(points, points)
def test_with_two_different_event_times_only_one_side_can_be_newer(
    a: StatusPoint, b: StatusPoint
) -> None:
    """With distinct event times, the earlier piece of news is never newer than the later."""
    if a.event_at is None or b.event_at is None or a.event_at == b.event_at:
        return
    assert not (is_newer(a, b) and is_newer(b, a))


# A vendor history: valid moves only (forward, a reschedule before delivery, a final cancel).
_FORWARD = {
    "new_request": ["ordered"],
    "ordered": ["scheduling", "pending_appointment"],
    "scheduling": ["scheduled"],
    "pending_appointment": ["scheduled", "committed"],
    "scheduled": ["on_site", "pending_reschedule"],
    "committed": ["on_site"],
    "on_site": ["post_processing", "pending_reschedule", "unscheduled"],
    "pending_reschedule": ["scheduled"],
    "unscheduled": ["scheduling", "scheduled"],
    "post_processing": ["notified", "completed"],
    "notified": ["completed"],
    "completed": [],
}


@st.composite
def histories(draw: st.DrawFn) -> list[StatusPoint]:
    status = "new_request"
    history = [StatusPoint(status, at(0))]
    for step in range(1, draw(st.integers(1, 14))):
        choices = _FORWARD[status]
        if draw(st.integers(0, 9)) == 0:
            history.append(StatusPoint("canceled", at(step)))
            break
        if not choices:
            break
        status = draw(st.sampled_from(choices))
        history.append(StatusPoint(status, at(step)))
    return history


def _apply_all(deliveries: list[StatusPoint]) -> StatusPoint | None:
    current: StatusPoint | None = None
    for delivery in deliveries:
        if is_newer(current, delivery):
            current = delivery
    return current


@settings(max_examples=300, deadline=None)
@given(histories(), st.randoms(use_true_random=False), st.integers(0, 3))
def test_deliveries_in_any_order_end_at_the_latest_news(
    history: list[StatusPoint], shuffler: random.Random, repeats: int
) -> None:
    """Timed news applied in any order, with repeats, ends at the vendor's last status."""
    deliveries = history + [shuffler.choice(history) for _ in range(repeats)]
    shuffler.shuffle(deliveries)
    assert _apply_all(deliveries) == history[-1]


@settings(deadline=None)
@given(
    st.lists(st.sampled_from(LIFECYCLE), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_untimed_forward_news_in_any_order_ends_at_the_highest_rank(
    statuses: list[str], shuffler: random.Random
) -> None:
    """Without event times and without reschedules, the rank alone orders the news."""
    deliveries = [StatusPoint(status) for status in statuses]
    shuffler.shuffle(deliveries)
    final = _apply_all(deliveries)
    assert final is not None
    assert status_rank(final.status) == max(status_rank(s) or 0 for s in statuses)
