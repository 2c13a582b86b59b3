"""`propready simulate`: what the rules would order now for the current source data.

It reads the PM database, the rule files and the state database; it sends nothing and writes
nothing, so it is safe on a production host before a rules deploy. Each order is built and
checked as the daemon would (the vendor's checks included), and the state database says whether
the daemon would really place it now (already ordered, an open order, a duplicate window) and
which budget, or missing price, would hold it.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy as sa

from propready.adapters.rulefiles import RuleFileError, load_rule_set
from propready.adapters.source import SourceUnavailable, query_columns
from propready.adapters.store import migrate
from propready.cli.context import settings_from
from propready.cli.output import FORMATS, emit
from propready.cli.progress import row_progress
from propready.cli.simulate_budgets import BudgetColumn
from propready.core.catalog import Catalog
from propready.core.facts import RowProblem
from propready.core.rule_tests import services_text, trace_lines
from propready.core.rules import RuleSet
from propready.core.simulation import Outcome
from propready.service.preflight import SimulatedHome, simulate_homes
from propready.service.rules_diff import compare_homes
from propready.service.rules_reload import load_checked_rules
from propready.settings import Settings
from propready.wiring import source_engine, state_engine, utc_now

PLAN_COLUMNS = (
    "external_property_id",
    "trigger",
    "rule_id",
    "services",
    "standing",
    "budget",
    "problems",
    "reason",
)
DIFF_COLUMNS = (
    "external_property_id",
    "live_rule",
    "live_services",
    "candidate_rule",
    "candidate_services",
    "gained",
    "lost",
)


def _refuse(label: str, exc: RuleFileError) -> NoReturn:
    if len(exc.problems) == 1 and exc.problems[0].location.line == 0:
        raise click.ClickException(f"--rules: {exc.problems[0].reason}")  # a path, not a rule
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    click.echo(f"the {label} rules cannot be used: {len(exc.problems)} problem(s)", err=True)
    sys.exit(1)


@click.command("simulate")
@click.option(
    "--rules",
    "candidate_path",
    type=click.Path(exists=True, path_type=Path),
    help="A candidate rule file or folder: show which homes gain or lose which services.",
)
@click.option("--property", "property_id", help="Only this external_property_id (with its trace).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def simulate_command(
    ctx: click.Context, candidate_path: Path | None, property_id: str | None, fmt: str
) -> None:
    """What the live rules would order now for the current source data; sends nothing.

    Each home is decided as the daemon would for every trigger that is true now, and its order
    is built and checked as PlanOmatic would (`problems` names what it would refuse).
    `standing` says whether the daemon would place it now: `would order`, already ordered for
    this readiness, an open order, inside a duplicate window, or first sight; `budget` names the
    budget that would hold or skip it (counting this period's orders), or a service without a
    price. With --rules, lists only the homes whose order would change between the live rules
    and the candidate.

    \b
    Example:
      propready simulate --format csv > orders-now.csv
      propready simulate --rules /tmp/candidate-rules/
      propready simulate --property DEN-00017
    """
    settings = settings_from(ctx)
    source = source_engine(settings, connect=True)
    try:
        state = _state_if_any(settings)
    except BaseException:
        source.dispose()
        raise
    try:
        live, catalog = load_checked_rules(settings, source)  # refused in one line by main
        try:
            candidate: RuleSet | None = None
            if candidate_path is not None:
                fields = frozenset(query_columns(source, settings.source.query))
                try:
                    candidate = load_rule_set(candidate_path, catalog, fields)
                except RuleFileError as exc:
                    _refuse("candidate", exc)
            rows, traced, homes, problems = _run(
                settings, state, source, live, catalog, candidate, property_id, fmt
            )
        except SourceUnavailable as exc:
            raise click.ClickException(f"source.query: {exc}") from None
    finally:
        if state is not None:
            state.dispose()
        source.dispose()
    if property_id is not None and not homes:
        raise click.ClickException(f"the source query returns no property {property_id!r}")
    if candidate is None:
        emit(rows, PLAN_COLUMNS, fmt, title=f"would order now (rules {live.version})")
    else:
        emit(rows, DIFF_COLUMNS, fmt, title=f"live {live.version} vs candidate {candidate.version}")
    if property_id is not None and fmt == "table":
        for label, outcome in traced:
            if outcome.decision is not None:
                click.echo(f"{label} rules:")
                for line in trace_lines(outcome.decision):
                    click.echo(f"  {line}")
        if problems:
            click.echo("the order would be refused by PlanOmatic's checks:")
            for problem in problems:
                click.echo(f"  {problem}")
    _summary(live, candidate, rows, homes)


def _state_if_any(settings: Settings) -> sa.Engine | None:
    """The state database to read, or None before the first `db upgrade` (nothing ordered yet).

    A SQLite file that does not exist is not created: simulate writes nothing.
    """
    url = settings.state.url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?")[0])
        if not path.exists():
            return None
    state = state_engine(settings)
    current = migrate.current_revision(state)
    if current is None:
        state.dispose()
        return None
    if current != migrate.head_revision():
        state.dispose()
        raise click.ClickException(
            f"state.url: the state database is at {current}, not the current schema; "
            "run `propready db upgrade`"
        )
    return state


def _run(
    settings: Settings,
    state: sa.Engine | None,
    source: sa.Engine,
    live: RuleSet,
    catalog: Catalog,
    candidate: RuleSet | None,
    property_id: str | None,
    fmt: str,
) -> tuple[list[dict[str, Any]], list[tuple[str, Outcome]], int, list[str]]:
    now = utc_now()
    rows: list[dict[str, Any]] = []
    traced: list[tuple[str, Outcome]] = []  # kept for --property only (the trace)
    problems: list[str] = []  # --property only: what the vendor would refuse, with hints
    homes = 0
    budget_column = BudgetColumn(settings, live, catalog, now)
    with row_progress("reading homes") as advance:
        if candidate is not None:
            for item in compare_homes(
                settings, source, live, catalog, candidate, now, only=property_id, on_row=advance
            ):
                if isinstance(item, RowProblem):
                    _unreadable(item, property_id)
                    continue
                homes += 1
                if property_id is not None:
                    traced.extend((("live", item.home.outcome), ("candidate", item.candidate)))
                    if item.home.problem is not None:
                        problems.extend(item.home.problem.problems)
                if item.change is not None:
                    rows.append(item.row())
            return rows, traced, homes, problems
        for home in simulate_homes(
            settings, state, source, live, catalog, now, only=property_id, on_row=advance
        ):
            if isinstance(home, RowProblem):
                _unreadable(home, property_id)
                continue
            homes += 1
            outcome = home.home.outcome
            if property_id is not None:
                traced.append(("live", outcome))
                if home.home.problem is not None:
                    problems.extend(home.home.problem.problems)
            if outcome.orders or property_id is not None:
                budget = budget_column.note(outcome, home.home.snapshot)
                rows.append({**_plan_row(home, brief=fmt == "table"), "budget": budget})
    return rows, traced, homes, problems


def _unreadable(problem: RowProblem, property_id: str | None) -> None:
    """A row that cannot be typed is skipped, unless it is the one home asked for."""
    if property_id is not None:
        raise click.ClickException(
            f"property {property_id!r} cannot be read: {problem.column}: {problem.reason}"
        )


def _plan_row(item: SimulatedHome, *, brief: bool) -> dict[str, Any]:
    """One home; `brief` (the table) keeps each problem to the vendor's words, attr: message."""
    outcome = item.home.outcome
    problem = item.home.problem
    problems = []
    if problem is not None:
        problems = [f"{e.attr}: {e.message}" for e in problem.errors] if brief else problem.problems
    standing = item.standing
    return {
        "external_property_id": outcome.property_id,
        "trigger": outcome.trigger,
        "rule_id": outcome.rule_id,
        "services": services_text(outcome.services),
        "standing": "refused by the vendor's checks"
        if problem is not None
        else standing.text
        if standing is not None
        else "",
        "problems": "; ".join(problems),
        "reason": outcome.reason,
        "_kind": "refused" if problem is not None else standing.kind if standing else "",
    }


def _summary(live: RuleSet, candidate: RuleSet | None, rows: list[Any], homes: int) -> None:
    if candidate is not None:
        click.echo(
            f"{len(rows)} of {homes} home(s) would change from {live.version} to "
            f"{candidate.version}; nothing was sent",
            err=True,
        )
        return
    kinds = Counter(row["_kind"] for row in rows)
    held = sum(kinds[k] for k in ("already_ordered", "open_order", "in_window", "decided"))
    click.echo(
        f"{len(rows)} of {homes} home(s) would be ordered now by the rules: "
        f"{kinds['refused']} refused by the vendor's checks, {kinds['would_order']} would be "
        f"placed at the next poll, {kinds['first_sight']} not (first sight), {held} not "
        "(an order already answers them); nothing was sent",
        err=True,
    )
