"""Pre-flight: what `propready check` verifies, and the order each home ready now would get.

`check` reports one PASS/FAIL line per part (config, rules, a refused reload, the state
database, the last polls, the source query, the orders ready now, the vendor). The orders line
is the one a first deployment needs most: every home whose trigger is true now is decided by the
live rules and its order built and validated exactly as the daemon would (core.planning, with the
vendor contract the sandbox shares), so a source query that lacks what PlanOmatic requires fails
here, naming the fields and the homes, instead of consuming readiness events as
`order_not_plannable` later. `simulate` shows the same per home (`ready_homes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from propready.adapters.database_urls import DatabaseSettingError, open_engine
from propready.adapters.planomatic_probe import probe_vendor
from propready.adapters.rulefiles import RuleFileError, load_rule_set
from propready.adapters.source import (
    SourceUnavailable,
    create_source_engine,
    query_columns,
    stream_batches,
)
from propready.adapters.store import home_orders, migrate, properties, sending
from propready.adapters.store.audit_chain import audit_owner_role, trigger_problems
from propready.adapters.store.engine import create_state_engine
from propready.core.catalog import Catalog
from propready.core.facts import RowProblem, RowTyper
from propready.core.model import Edge, PropertySnapshot
from propready.core.planning import OrderPlan, PlanProblem, plan_order
from propready.core.rules import RuleSet
from propready.core.simulation import ExistingOrder, Outcome, Standing, simulate, standing
from propready.core.triggers import TriggerMemory
from propready.service.console_check import console_check_lines
from propready.service.notify import check_lines as notify_check_lines
from propready.service.rules_reload import load_catalog_or_refuse, pending_refusals
from propready.service.writeback import check_lines as writeback_check_lines
from propready.settings import Settings

IDS_SHOWN = 3  # property ids listed per grouped reason


@dataclass(frozen=True, slots=True)
class CheckLine:
    name: str
    # True: PASS; False: FAIL (check exits 1); None: WARN (worth a look, the exit code stays).
    ok: bool | None
    detail: str
    more: tuple[str, ...] = ()  # indented lines under the verdict

    @property
    def verdict(self) -> str:
        return "WARN" if self.ok is None else "PASS" if self.ok else "FAIL"

    @property
    def failed(self) -> bool:
        return self.ok is False

    def render(self) -> list[str]:
        head = f"{self.verdict} {self.name}: {self.detail}"
        return [head, *(f"    {line}" for line in self.more)]


@dataclass(frozen=True, slots=True)
class HomeNow:
    """A home as the live rules see it now: the decision and, when it orders, the order."""

    snapshot: PropertySnapshot
    outcome: Outcome
    plan: OrderPlan | None = None
    problem: PlanProblem | None = None

    @property
    def property_id(self) -> str:
        return self.snapshot.external_property_id


def run_checks(
    settings: Settings, now: datetime, *, on_row: Callable[[], None] | None = None
) -> list[CheckLine]:
    """Every check, in the order people read them; `on_row` hears of each source row read."""
    lines = [CheckLine("config", True, "loaded and valid")]
    source_line, fields = check_source(settings)
    rules_line, loaded = check_rules(settings, fields)
    lines.append(rules_line)
    state_line = check_state(settings)
    if state_line.ok:
        lines.extend(
            CheckLine("reload", False, text) for text in pending_refusals(settings.state.url)
        )
    lines.append(state_line)
    if state_line.ok:
        lines.extend(check_polls(settings))
        lines.extend(check_sending(settings))
        lines.extend(check_audit_guard(settings))
        lines.extend(CheckLine(*line) for line in console_check_lines(settings))  # [console]
    lines.append(source_line)
    if loaded is not None and source_line.ok:
        lines.append(check_orders(settings, *loaded, now, on_row=on_row))
    lines.append(check_vendor(settings))
    lines.extend(CheckLine(*line) for line in notify_check_lines(settings, now))
    lines.extend(CheckLine(*line) for line in writeback_check_lines(settings))
    lines.extend(check_exposure(settings))
    return lines


def rule_problems_line(exc: RuleFileError) -> str:
    """Rule-file problems in one line: the first, and how many more (`rules check` lists all)."""
    first = exc.problems[0]
    where = first.location.file
    if first.location.line:
        text = str(first)
    elif where in first.reason:  # "rules.path: /etc/propready/rules does not exist"
        text = first.reason
    else:  # a whole file is refused (too large, not a regular file): name it
        text = f"{where}: {first.reason}"
    more = len(exc.problems) - 1
    return text + (f" (and {more} more: `propready rules check` lists them)" if more else "")


def check_rules(
    settings: Settings, fields: frozenset[str] | None
) -> tuple[CheckLine, tuple[RuleSet, Catalog] | None]:
    try:
        catalog = load_catalog_or_refuse(settings.rules.catalog_path)
        rules = load_rule_set(settings.rules.path, catalog, fields)
    except RuleFileError as exc:
        return CheckLine("rules", False, rule_problems_line(exc)), None
    note = "" if fields is not None else " (field names not checked: the source query failed)"
    detail = f"{len(rules.rules)} rules, version {rules.version}{note}"
    budgets = tuple(f"budget {b.name}: {b.describe()}" for b in rules.budgets)
    return CheckLine("rules", True, detail, budgets), (rules, catalog)


def check_state(settings: Settings) -> CheckLine:
    try:
        engine = open_engine("state.url", settings.state.url, create_state_engine)
    except DatabaseSettingError as exc:
        return CheckLine("state", False, str(exc))
    try:
        current = migrate.current_revision(engine)
        head = migrate.head_revision()
        if current != head:
            return CheckLine(
                "state",
                False,
                f"schema at {current or 'nothing'}, head is {head}: run `propready db upgrade`",
            )
        return CheckLine("state", True, f"reachable, schema at head {head}")
    except sa.exc.SQLAlchemyError as exc:
        return CheckLine(
            "state", False, f"state.url: cannot read the schema ({type(exc).__name__})"
        )
    finally:
        engine.dispose()


def check_polls(settings: Settings) -> list[CheckLine]:
    """The daemon's own record of its last polls: failing ones are reported, with the error."""
    engine = create_state_engine(settings.state.url)
    try:
        with engine.connect() as connection:
            checkpoint = properties.load_checkpoint(connection, "source")
    except sa.exc.SQLAlchemyError:
        return []  # the state line already says what is wrong with the database
    finally:
        engine.dispose()
    failures = checkpoint.consecutive_failures
    if failures:
        detail = f"{failures} failed in a row; last: {checkpoint.last_error}"
        return [CheckLine("polls", False, detail)]
    last = checkpoint.last_success_at
    return [
        CheckLine("polls", True, f"last successful poll {last.isoformat() if last else 'never'}")
    ]


def check_sending(settings: Settings) -> list[CheckLine]:
    """Sending paused for every host (a refused API key, or an operator): orders wait."""
    engine = create_state_engine(settings.state.url)
    try:
        with engine.connect() as connection:
            paused = sending.current_pause(connection)
    except sa.exc.SQLAlchemyError:
        return []  # the state line already says what is wrong with the database
    finally:
        engine.dispose()
    if paused is None:
        return [CheckLine("sending", True, "not paused")]
    since = paused.paused_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    detail = (
        f"paused for every host since {since}: {paused.reason}; orders wait in planned "
        "(fix the key and reload, or `propready sending resume --reason ...`)"
    )
    return [CheckLine("sending", False, detail)]


def check_audit_guard(settings: Settings) -> list[CheckLine]:
    """The audit log's triggers are in place, and (PostgreSQL) the daemon's role cannot remove
    them: a role that owns audit_log can disable its triggers and delete rows."""
    engine = create_state_engine(settings.state.url)
    try:
        with engine.connect() as connection:
            problems = trigger_problems(connection)
            owner = audit_owner_role(connection)
    except sa.exc.SQLAlchemyError:
        return []  # the state line already says what is wrong with the database
    finally:
        engine.dispose()
    found = [CheckLine("audit", False, problem) for problem in problems]
    if owner is not None:
        found.append(
            CheckLine(
                "audit",
                None,
                f"state.url connects as {owner}, which owns audit_log (or is a superuser): it "
                "could disable the audit triggers and delete rows; run the daemon as a role "
                "with INSERT and SELECT on audit_log only (RUNBOOK, Database roles)",
            )
        )
    return found


def check_exposure(settings: Settings) -> list[CheckLine]:
    """Warnings about settings that work but expose more than they should."""
    if not settings.metrics.beyond_loopback:
        return []
    return [
        CheckLine(
            "metrics",
            None,
            f"[metrics] listen = {settings.metrics.listen} is reachable beyond this host; "
            "/metrics and /healthz have no authentication (use 127.0.0.1, or firewall it)",
        )
    ]


def check_source(settings: Settings) -> tuple[CheckLine, frozenset[str] | None]:
    """Whether the source query runs, and the columns it returns."""
    try:
        engine = open_engine("source.url", settings.source.url, create_source_engine, connect=True)
    except DatabaseSettingError as exc:
        return CheckLine("source", False, str(exc)), None
    try:
        columns = frozenset(query_columns(engine, settings.source.query))
    except SourceUnavailable as exc:
        return CheckLine("source", False, f"source.query: {exc}"), None
    finally:
        engine.dispose()
    if "external_property_id" not in columns:
        return CheckLine("source", False, "source.query returns no external_property_id"), None
    return CheckLine("source", True, f"reachable, query returns {len(columns)} columns"), columns


def check_vendor(settings: Settings) -> CheckLine:
    """The key and the URL, in every mode: dry_run included, so going live holds no surprise."""
    verdict = probe_vendor(
        settings.planomatic.base_url,
        settings.planomatic.api_key.get_secret_value(),
        timeout_seconds=min(10.0, settings.planomatic.timeout_seconds),
    )
    note = " (dry_run: nothing is sent yet)" if settings.orders.mode == "dry_run" else ""
    return CheckLine("vendor", verdict.ok, verdict.detail + (note if verdict.ok else ""))


@dataclass
class OrdersReport:
    """What `check` says about the homes ready now, grouped by the vendor's reason."""

    rows: int = 0
    unreadable: int = 0  # rows the poll would quarantine
    ready: int = 0  # a trigger is true now
    ordering: int = 0  # and a rule orders something
    refused: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    hints: dict[tuple[str, str], str] = field(default_factory=dict)
    refused_homes: int = 0

    def add(self, home: HomeNow) -> None:
        if home.outcome.trigger is not None:
            self.ready += 1
        if not home.outcome.orders:
            return
        self.ordering += 1
        if home.problem is None:
            return
        self.refused_homes += 1
        for error in home.problem.errors:
            key = (error.attr, error.message)
            self.refused.setdefault(key, []).append(home.property_id)
            self.hints.setdefault(key, error.hint)

    def line(self) -> CheckLine:
        unreadable = (
            [f"{self.unreadable} row(s) cannot be read (a bad value): the daemon quarantines them"]
            if self.unreadable
            else []
        )
        if not self.refused_homes:
            detail = (
                f"{self.ordering} home(s) ready now would be ordered; every order passes the "
                f"vendor's checks ({self.rows} row(s) read)"
            )
            return CheckLine("orders", True, detail, tuple(unreadable))
        groups = sorted(self.refused.items(), key=lambda item: (-len(item[1]), item[0]))
        more = [*(_group_line(key, ids, self.hints[key]) for key, ids in groups), *unreadable]
        detail = (
            f"{self.refused_homes} home(s) ready now could not be ordered "
            f"(of {self.ordering} a rule would order; {self.rows} row(s) read)"
        )
        return CheckLine("orders", False, detail, tuple(more))


def _group_line(key: tuple[str, str], ids: list[str], hint: str) -> str:
    attr, message = key
    shown = ", ".join(ids[:IDS_SHOWN]) + (
        f" and {len(ids) - IDS_SHOWN} more" if len(ids) > IDS_SHOWN else ""
    )
    why = f" ({hint})" if hint else ""
    return f"{attr}: {message}{why}: {len(ids)} home(s): {shown}"


def check_orders(
    settings: Settings,
    rules: RuleSet,
    catalog: Catalog,
    now: datetime,
    *,
    on_row: Callable[[], None] | None = None,
) -> CheckLine:
    report = OrdersReport()
    engine = create_source_engine(settings.source.url)
    try:
        for home in ready_homes(settings, engine, rules, catalog, now, on_row=on_row):
            report.rows += 1
            if isinstance(home, RowProblem):
                report.unreadable += 1
            else:
                report.add(home)
    except SourceUnavailable as exc:
        return CheckLine("orders", False, f"source.query: {exc}")
    finally:
        engine.dispose()
    return report.line()


def ready_homes(
    settings: Settings,
    source: sa.Engine,
    rules: RuleSet,
    catalog: Catalog,
    now: datetime,
    *,
    only: str | None = None,
    on_row: Callable[[], None] | None = None,
) -> Iterator[HomeNow | RowProblem]:
    """Each source row (or only `only`) decided by `rules` now, with the order it would get.

    Reads through the source adapter and types rows as the poll does; SourceUnavailable when
    the query fails. Edges are not considered: this is "what would these rules order for the
    homes as they are", and the order's id is not the one the daemon would mint.
    """
    typer: RowTyper | None = None
    zone = settings.source.zone
    for batch in stream_batches(source, settings.source.query, settings.source.batch_size):
        if typer is None:
            try:
                typer = RowTyper(
                    batch.columns,
                    zone,
                    settings.source.types,
                    secret_columns=settings.source.secret_columns,
                )
            except ValueError as exc:
                raise SourceUnavailable(f"source.query: {exc}") from None
        for values in batch.rows:
            if on_row is not None:
                on_row()
            if only is not None and str(typer.property_id(values)) != only:
                continue
            typed = typer.type_row(values)
            if isinstance(typed, RowProblem):
                yield typed
                continue
            yield decide_now(settings, rules, catalog, typed, now)


def decide_now(
    settings: Settings, rules: RuleSet, catalog: Catalog, snapshot: PropertySnapshot, now: datetime
) -> HomeNow:
    outcome = simulate(rules, snapshot, now, settings.source.zone)
    if not outcome.orders or outcome.decision is None or outcome.trigger is None:
        return HomeNow(snapshot, outcome)
    edge = Edge(outcome.trigger, 0, "rising_edge")  # edge 0: a what-if, never stored
    try:
        plan = plan_order(
            snapshot, edge, outcome.decision, catalog, settings.orders.duplicate_window_hours
        )
    except PlanProblem as exc:
        return HomeNow(snapshot, outcome, problem=exc)
    return HomeNow(snapshot, outcome, plan=plan)


@dataclass(frozen=True, slots=True)
class SimulatedHome:
    home: HomeNow
    standing: Standing | None  # for homes a rule orders: would the daemon order it now, and why not


def simulate_homes(
    settings: Settings,
    state: sa.Engine | None,
    source: sa.Engine,
    rules: RuleSet,
    catalog: Catalog,
    now: datetime,
    *,
    only: str | None = None,
    on_row: Callable[[], None] | None = None,
) -> Iterator[SimulatedHome | RowProblem]:
    """`ready_homes`, and for each home a rule orders, what the state database says about it:
    already ordered for this readiness, an open order, inside a duplicate window, first sight.

    `state` None stands for a state database that does not exist yet: nothing seen, nothing
    ordered. It is only read, in one short transaction per batch of homes, so a running daemon
    is never held up for the length of a simulation.
    """
    pending: list[HomeNow | RowProblem] = []
    for home in ready_homes(settings, source, rules, catalog, now, only=only, on_row=on_row):
        pending.append(home)
        if len(pending) >= STATE_BATCH:
            yield from _with_standing(settings, state, pending, now)
            pending = []
    yield from _with_standing(settings, state, pending, now)


STATE_BATCH = 1000  # homes looked up in the state database per transaction


def _with_standing(
    settings: Settings, state: sa.Engine | None, homes: list[HomeNow | RowProblem], now: datetime
) -> Iterator[SimulatedHome | RowProblem]:
    ordering = [h.property_id for h in homes if isinstance(h, HomeNow) and h.outcome.orders]
    memories: dict[str, dict[str, TriggerMemory]] = {}
    existing: dict[str, list[ExistingOrder]] = {}
    if state is not None and ordering:
        with state.connect() as connection:
            memories = home_orders.trigger_memories(connection, ordering)
            existing = home_orders.orders_of_homes(connection, ordering)
    for home in homes:
        if isinstance(home, RowProblem) or not home.outcome.orders:
            yield home if isinstance(home, RowProblem) else SimulatedHome(home, None)
            continue
        trigger = home.outcome.trigger
        assert trigger is not None
        seen = home.property_id in memories
        memory = memories.get(home.property_id, {}).get(trigger)
        orders = existing.get(home.property_id, [])
        verdict = standing(trigger, seen, memory, orders, now, settings.orders.first_sight)
        yield SimulatedHome(home, verdict)
