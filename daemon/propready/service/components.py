"""What a cycle works with: the wired adapters, the send pacer, and the cycle's counters."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from propready.adapters.planomatic import PlanomaticClient
from propready.adapters.store import pacing
from propready.core.batch_plan import config_fingerprint
from propready.core.catalog import Catalog
from propready.core.rules import RuleSet
from propready.settings import Settings


class Pacer:
    """Keeps every sender sharing the state database under the vendor's rate limit, together.

    Sends are spaced evenly, one per `60 / (per_minute * headroom)` seconds, through a slot
    schedule kept in the state database (`adapters.store.pacing`): threads, processes and hosts
    on one PostgreSQL database share it; on SQLite, processes on the host share it. Even spacing
    (no bursts) keeps a fixed-window vendor limiter happy even when requests arrive with jitter;
    `headroom` leaves a margin for clock and network jitter.
    """

    def __init__(
        self,
        per_minute: int,
        sleep: Callable[[float], None] = time.sleep,
        *,
        headroom: float = 0.98,
        name: str = "planomatic",
    ) -> None:
        if per_minute <= 0 or not 0 < headroom <= 1:
            raise ValueError("per_minute must be positive and headroom in (0, 1]")
        self.interval = 60.0 / (per_minute * headroom)
        self.name = name
        # After a 429 everyone pauses this long. The vendor documents a 60 s window but no
        # Retry-After; ten intervals frees a fixed window's worth of slots without stalling.
        self.rate_limited_pause = min(60.0, 10 * self.interval)
        self._sleep = sleep

    def wait(self, state: sa.Engine) -> float:
        """Block until this sender's slot; return the seconds waited."""
        with state.begin() as connection:
            slot, now = pacing.reserve_send_slot(connection, self.name, self.interval)
        self.last_slot = slot
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return delay

    def back_off(self, state: sa.Engine, seconds: float) -> None:
        """After a 429 every sender pauses: the vendor's window is full, whoever filled it."""
        with state.begin() as connection:
            pacing.push_back(connection, self.name, seconds)


CRASH_ENV = "PROPREADY_CRASH_AT"
CRASH_POINTS = frozenset(
    {
        "after_plan",
        "after_lease",
        "after_post",
        "after_outcome",
        # `propready serve`: a delivery inserted but not committed / committed but not answered
        "delivery_before_commit",
        "delivery_after_commit",
        "notify_after_send",  # a notification sent, its outcome not yet recorded
        "apply_before_commit",  # a delivery applied to its order, the transaction not committed
        # write-back: the statement ran on the target, not committed there / committed there
        # and not yet recorded in the state database
        "writeback_before_target_commit",
        "writeback_after_target_commit",
    }
)


def crash_point(name: str) -> None:
    """Fault injection for the crash tests: SIGKILL this process at the named point.

    `PROPREADY_CRASH_AT=after_post` kills the process right after the vendor answered and before
    the outcome is committed; nothing runs after SIGKILL (no finally, no atexit), as in a real
    power cut or OOM kill.
    """
    assert name in CRASH_POINTS, name
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Components:
    """Everything a cycle needs, wired once by the composition root (`propready.wiring`)."""

    settings: Settings
    state: sa.Engine
    source: sa.Engine
    rules: RuleSet
    catalog: Catalog
    client: PlanomaticClient | None  # None in dry_run: nothing may be sent
    owner: str = "propready"
    pacer: Pacer = field(default_factory=lambda: Pacer(50))
    # Reconciliation retrieves' own schedule: [planomatic] sync_share of the rate limit.
    sync_pacer: Pacer | None = None
    jitter: random.Random = field(default_factory=random.Random)
    # Set on SIGTERM: loops stop taking new work, and an order still waiting for its rate-limit
    # slot is parked instead of sent.
    stop_requested: threading.Event = field(default_factory=threading.Event)

    def plan_fingerprint(self) -> str:
        """What an order's plan depends on besides the rules and the home's row (an open
        readiness is planned again when it changes)."""
        orders = self.settings.orders
        return config_fingerprint(
            orders.mode, orders.duplicate_window_hours, self.catalog, self.settings.source.query
        )


@dataclass
class CycleSummary:
    full_pass: bool = False
    poll_skipped: bool = False
    poll_interrupted: bool = False  # stopped between batches because the daemon is stopping
    source_error: str | None = None
    rows: int = 0
    quarantined: int = 0
    new_properties: int = 0
    changed: int = 0
    unchanged: int = 0
    events: int = 0
    replanned: int = 0  # open readiness events planned again (their row, rules or config changed)
    ordered: int = 0
    not_ordered: int = 0
    blocked: int = 0
    budget_held: int = 0  # orders created in awaiting_approval by a budget or a missing price
    budget_skipped: int = 0  # plans a budget refused (when_exceeded: skip)
    invalid: int = 0
    orders_created: int = 0
    sent: int = 0
    placed: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    recovered: int = 0
    resend_covered: int = 0  # ambiguous outcomes re-sent under the vendor's duplicate protection
    rate_limited: int = 0  # HTTP 429 answers
    rate_limit_wait_seconds: float = 0.0  # time spent waiting for send slots
    parked: int = 0  # leased orders given back unsent because the daemon is stopping
    status_checked: int = 0
    status_changed: int = 0
    sending_paused: str | None = None  # why sending is paused for every host, when it is
    notify_facts: int = 0  # facts worth telling a person, noted from the audit log and state
    notify_sent: int = 0  # notifications delivered to a channel
    notify_failed: int = 0  # notification attempts that failed (retried with backoff)
    # The vendor's news (service/vendor_news.py): stored deliveries applied to orders.
    news_applied: int = 0  # changed the order (status, price, delivery, unknown resolved)
    news_unchanged: int = 0  # not newer than what the order holds: nothing changed
    news_unmatched: int = 0  # names no order of ours (yet): kept, flagged, tried again later
    news_malformed: int = 0
    news_requeued: int = 0  # unmatched deliveries whose order now exists
    delivered: int = 0  # orders the vendor delivered
    vendor_canceled: int = 0  # orders the vendor canceled
    vendor_reordered: int = 0  # homes re-ordered after a vendor cancel (on_vendor_cancel)
    writeback_done: int = 0  # delivered orders written back to the PM system
    writeback_failed: int = 0  # write-back attempts that failed (retried with backoff)
    writeback_given_up: int = 0  # write-backs that failed for give_up_after_hours

    def as_dict(self) -> dict[str, int | float | bool | str | None]:
        return dict(self.__dict__)
