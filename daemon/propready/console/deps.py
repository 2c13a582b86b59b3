"""What the console needs from the rest of propready, passed in (the composition root builds it).

Tests pass their own clock, vendor client, deliverables provider or reorder function; every action
still goes through the same service functions as the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa

from propready.adapters.planomatic import PlanomaticClient
from propready.core.budgets import Budget
from propready.core.catalog import Catalog
from propready.core.rules import RuleSet
from propready.service.reorder import Reordered
from propready.service.rules_diff import RulesDiff
from propready.settings import Settings


class DeliverableLink(Protocol):
    """One delivered item of an order (a photo, a 3D tour, the photo manager link)."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def sequence(self) -> int | None: ...
    @property
    def caption(self) -> str | None: ...


DeliverablesProvider = Callable[[sa.Connection, int], Sequence[DeliverableLink]]


def no_deliverables(connection: sa.Connection, order_id: int) -> Sequence[DeliverableLink]:
    """Until the order lifecycle stores deliverables: nothing delivered is known."""
    return ()


@dataclass(frozen=True, slots=True)
class ReorderRequest:
    external_property_id: str
    reason: str
    by: str
    ignore_window: bool


@contextmanager
def no_vendor() -> Iterator[PlanomaticClient | None]:
    yield None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _no_rules() -> tuple[RuleSet, Catalog]:
    raise RuntimeError("no rule set given to the console")


def _no_reorder(request: ReorderRequest) -> Reordered:
    raise RuntimeError("reorder is not available in this console")


# Uploaded rule files as (file name, text) pairs -> how they would order differently from the
# live rules for the homes as they are now (RuleFileError when they do not load).
CompareRules = Callable[[Sequence[tuple[str, str]]], RulesDiff]


def _no_compare(sources: Sequence[tuple[str, str]]) -> RulesDiff:
    raise RuntimeError("comparing rule files is not available in this console")


@dataclass(frozen=True)
class ConsoleDeps:
    settings: Settings
    state: sa.Engine
    now: Callable[[], datetime] = _utc_now
    # A PlanOmatic client for cancel and resolve (None in dry_run), closed after the action.
    vendor: Callable[[], AbstractContextManager[PlanomaticClient | None]] = no_vendor
    # The live rule files' budgets, for approving an order a budget held.
    budgets: Callable[[], Sequence[Budget]] = tuple
    # The rule set and catalog the rules page shows (loaded from [rules] path).
    rules: Callable[[], tuple[RuleSet, Catalog]] = _no_rules
    reorder: Callable[[ReorderRequest], Reordered] = _no_reorder
    deliverables: DeliverablesProvider = no_deliverables
    compare_rules: CompareRules = _no_compare
    extra_secrets: Sequence[str] = field(default_factory=tuple)
