"""`propready simulate`: what the rules would order now for the current source data.

It reads the PM database and the rule files (and, when the rules have budgets, this period's
orders in the state database): nothing is sent or written, so it is safe on a production host
before a rules deploy.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from propready.adapters.rule_reloader import load_checked_rules
from propready.adapters.rulefiles import RuleFileError, load_rule_set
from propready.adapters.source import create_source_engine, query_columns, stream_batches
from propready.cli.context import settings_from
from propready.cli.output import FORMATS, emit
from propready.cli.simulate_budgets import BudgetColumn
from propready.core.facts import RowTyper
from propready.core.model import PropertySnapshot
from propready.core.rule_tests import services_text, trace_lines
from propready.core.rules import RuleSet
from propready.core.simulation import Outcome, difference, simulate
from propready.settings import Settings
from propready.wiring import utc_now

PLAN_COLUMNS = ("external_property_id", "trigger", "rule_id", "services", "budget", "reason")
DIFF_COLUMNS = (
    "external_property_id",
    "live_rule",
    "live_services",
    "candidate_rule",
    "candidate_services",
    "gained",
    "lost",
)


def _snapshots(
    settings: Settings, engine: Any, only: str | None, progress: Progress
) -> Iterator[PropertySnapshot]:
    task = progress.add_task("reading homes", total=None)
    typer: RowTyper | None = None
    for batch in stream_batches(engine, settings.source.query, settings.source.batch_size):
        if typer is None:
            typer = RowTyper(batch.columns, settings.source.zone, settings.source.types)
        for values in batch.rows:
            progress.advance(task)
            if only is not None and str(typer.property_id(values)) != only:
                continue
            snapshot = typer.type_row(values)
            if isinstance(snapshot, PropertySnapshot):
                yield snapshot


def _refuse(label: str, exc: RuleFileError) -> NoReturn:
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

    Each home is decided as the daemon would for every trigger that is true now; the budget
    column names the budget that would hold or skip it (counting from this period's orders in
    the state database), or a service without a price. With --rules, lists only the homes whose
    order would change between the live rules and the candidate.

    \b
    Example:
      propready simulate --format csv > orders-now.csv
      propready simulate --rules /tmp/candidate-rules/
      propready simulate --property DEN-00017
    """
    settings = settings_from(ctx)
    engine = create_source_engine(settings.source.url)
    try:
        try:
            live, _catalog = load_checked_rules(settings, engine)
        except RuleFileError as exc:
            _refuse("live", exc)
        candidate: RuleSet | None = None
        if candidate_path is not None:
            fields = frozenset(query_columns(engine, settings.source.query))
            try:
                candidate = load_rule_set(candidate_path, _catalog, fields)
            except RuleFileError as exc:
                _refuse("candidate", exc)
        budget_column = BudgetColumn(settings, live, _catalog, utc_now())
        rows, outcomes, homes = _run(settings, engine, live, candidate, property_id, budget_column)
    finally:
        engine.dispose()
    if property_id is not None and not homes:
        raise click.ClickException(f"the source query returns no property {property_id!r}")
    if candidate is None:
        emit(rows, PLAN_COLUMNS, fmt, title=f"would order now (rules {live.version})")
    else:
        emit(rows, DIFF_COLUMNS, fmt, title=f"live {live.version} vs candidate {candidate.version}")
    if property_id is not None and fmt == "table":
        for label, outcome in outcomes:
            if outcome.decision is not None:
                click.echo(f"{label} rules:")
                for line in trace_lines(outcome.decision):
                    click.echo(f"  {line}")
    _summary(live, candidate, rows, homes)


def _run(
    settings: Settings,
    engine: Any,
    live: RuleSet,
    candidate: RuleSet | None,
    property_id: str | None,
    budget_column: BudgetColumn,
) -> tuple[list[dict[str, Any]], list[tuple[str, Outcome]], int]:
    now = utc_now()
    zone = settings.source.zone
    rows: list[dict[str, Any]] = []
    outcomes: list[tuple[str, Outcome]] = []  # kept for --property only (the trace)
    homes = 0
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        for snapshot in _snapshots(settings, engine, property_id, progress):
            homes += 1
            live_outcome = simulate(live, snapshot, now, zone)
            if property_id is not None:
                outcomes.append(("live", live_outcome))
            if candidate is None:
                if live_outcome.orders or property_id is not None:
                    budget = budget_column.note(live_outcome, snapshot)
                    rows.append({**_plan_row(live_outcome), "budget": budget})
                continue
            other = simulate(candidate, snapshot, now, zone)
            if property_id is not None:
                outcomes.append(("candidate", other))
            changed = difference(live_outcome, other)
            if changed is not None:
                gained, lost = changed
                rows.append(
                    {
                        "external_property_id": snapshot.external_property_id,
                        "live_rule": live_outcome.rule_id,
                        "live_services": services_text(live_outcome.services),
                        "candidate_rule": other.rule_id,
                        "candidate_services": services_text(other.services),
                        "gained": ", ".join(gained),
                        "lost": ", ".join(lost),
                    }
                )
    return rows, outcomes, homes


def _plan_row(outcome: Outcome) -> dict[str, Any]:
    return {
        "external_property_id": outcome.property_id,
        "trigger": outcome.trigger,
        "rule_id": outcome.rule_id,
        "services": services_text(outcome.services),
        "reason": outcome.reason,
    }


def _summary(live: RuleSet, candidate: RuleSet | None, rows: list[Any], homes: int) -> None:
    if candidate is None:
        click.echo(
            f"{len(rows)} of {homes} home(s) would be ordered now; nothing was sent", err=True
        )
    else:
        click.echo(
            f"{len(rows)} of {homes} home(s) would change from {live.version} to "
            f"{candidate.version}; nothing was sent",
            err=True,
        )
