"""What a cycle works with: the wired adapters, the send pacer, and the cycle's counters."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from propready.adapters.planomatic import PlanomaticClient
from propready.core.catalog import Catalog
from propready.core.rules import RuleSet
from propready.settings import Settings

LEASE_SECONDS = 300.0


class Pacer:
    """Evenly spaced sends: any 60 s window holds at most `per_minute` requests, without bursts.

    One process only; the shared, cross-host limiter is the [orders] issue's work.
    """

    def __init__(self, per_minute: int, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 60.0 / per_minute
        self._sleep = sleep
        self._last = -self.interval

    def wait(self) -> None:
        delay = self._last + self.interval - time.monotonic()
        if delay > 0:
            self._sleep(delay)
        self._last = time.monotonic()


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
    jitter: random.Random = field(default_factory=random.Random)


@dataclass
class CycleSummary:
    full_pass: bool = False
    poll_skipped: bool = False
    source_error: str | None = None
    rows: int = 0
    quarantined: int = 0
    new_properties: int = 0
    changed: int = 0
    unchanged: int = 0
    events: int = 0
    ordered: int = 0
    not_ordered: int = 0
    blocked: int = 0
    invalid: int = 0
    orders_created: int = 0
    sent: int = 0
    placed: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    recovered: int = 0

    def as_dict(self) -> dict[str, int | bool | str | None]:
        return dict(self.__dict__)
