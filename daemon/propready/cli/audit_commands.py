"""`propready audit` (query, `verify`) and `propready explain`: read and check the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import click
import sqlalchemy as sa

from propready.adapters.store import audit
from propready.adapters.store.audit_chain import (
    anchor_matches,
    head_problem,
    trigger_problems,
    verify_chain,
)
from propready.adapters.store.deliverables import deliverables_for
from propready.cli.context import settings_from
from propready.cli.output import FORMATS, emit
from propready.core.audit_kinds import AuditKind
from propready.report.story import summarise
from propready.wiring import state_engine

COLUMNS = (
    "id",
    "at",
    "kind",
    "external_property_id",
    "trigger_name",
    "rule_id",
    "external_order_id",
    "detail",
)
STORY_TABLE_COLUMNS = ("at", "kind", "trigger_name", "rule_id", "external_order_id", "summary")
STORY_JSON_COLUMNS = (*COLUMNS, "rules_version", "event_id", "order_id", "summary")


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@contextmanager
def _state(ctx: click.Context) -> Iterator[sa.Connection]:
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


@click.group("audit", invoke_without_command=True)
@click.option("--property", "property_id", help="Only this external_property_id.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice([kind.value for kind in AuditKind]),
    metavar="KIND",
    help="Only these event kinds (repeatable); an unknown kind is refused with the list.",
)
@click.option("--rule", "rule_id", help="Only this rule id.")
@click.option("--entity", "entity", help="Only rows of orders for this billing entity slug.")
@click.option("--order", "order", help="Only rows of this order (its external_order_id).")
@click.option(
    "--since", type=click.DateTime(), help="From this time (UTC unless it has an offset)."
)
@click.option("--until", type=click.DateTime(), help="Before this time.")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="At most this many rows, oldest first [default: 1000].",
)
@click.option(
    "--latest",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="The newest N rows matching the filters, newest first.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def audit_command(
    ctx: click.Context,
    property_id: str | None,
    kinds: tuple[str, ...],
    rule_id: str | None,
    entity: str | None,
    order: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    latest: int | None,
    fmt: str,
) -> None:
    """Query the audit log, oldest first; `audit verify` checks its hash chain.

    An --order or --entity filter also keeps the readiness event and rule decision that led to
    each matching order.

    \b
    Example:
      propready audit --kind order_placed --since 2026-11-01 --format csv
      propready audit --entity investment_entity_1 --until 2026-12-01
      propready audit --order PR-DEN-00017-1a2b3c
      propready audit --latest 20 --kind order_rejected
      propready audit verify
    """
    if ctx.invoked_subcommand is not None:
        return
    if latest is not None and limit is not None:
        raise click.UsageError("give --latest N or --limit N, not both")
    with _state(ctx) as connection:
        rows = audit.query_events(
            connection,
            external_property_id=property_id,
            kinds=kinds,
            rule_id=rule_id,
            since=_aware(since),
            until=_aware(until),
            limit=latest or limit or 1000,
            billing_entity_slug=entity,
            external_order_id=order,
            newest_first=latest is not None,
        )
    emit(rows, COLUMNS, fmt, title="audit log, newest first" if latest else "audit log")


@audit_command.command("verify")
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    metavar="ID:HASH",
    help="Also check that row ID still has HASH (a head noted down earlier; repeatable).",
)
@click.pass_context
def verify_command(ctx: click.Context, anchors: tuple[str, ...]) -> None:
    """Walk the audit log's hash chain; exit 1 at the first row that does not check out.

    Also checks that the last row is the chain head the database keeps (rows cut off the end
    show there) and that every trigger guarding the audit tables exists and is enabled.

    Prints the head (last id and hash): keep it somewhere else (the daemon also logs it as
    `audit_anchor` and exports it as a metric), and pass it back later with --anchor, which
    catches even a tamperer who rewrote the head.

    \b
    Example:
      propready audit verify
      propready audit verify --anchor 18231:4f1c...e9
    """
    parsed: list[tuple[int, str]] = []
    for anchor in anchors:
        row_id, sep, row_hash = anchor.partition(":")
        if not sep or not row_id.isdigit() or len(row_hash) != 64:
            raise click.BadParameter(f"{anchor!r} is not ID:HASH", param_hint="--anchor")
        parsed.append((int(row_id), row_hash))
    with _state(ctx) as connection:
        report = verify_chain(connection)
        lost = [a for a in parsed if not anchor_matches(connection, *a)]
        problems = trigger_problems(connection)
        head = head_problem(connection, report) if report.ok else None
    for problem in problems:
        click.echo(f"BROKEN: {problem}; the audit log is not protected")
    if not report.ok:
        click.echo(
            f"BROKEN at audit row {report.broken_id}: {report.problem}"
            f" ({report.rows} rows before it check out)"
        )
        raise SystemExit(1)  # not ctx.exit: main() runs click with standalone_mode=False
    if head is not None:
        click.echo(f"BROKEN: {head}")
    for lost_id, lost_hash in lost:
        click.echo(f"BROKEN: anchor row {lost_id} no longer has hash {lost_hash}")
    if lost or problems or head is not None:
        raise SystemExit(1)
    click.echo(f"OK: {report.rows} rows, head {report.head_id} {report.head_hash or '-'}")


@click.command("explain")
@click.argument("property_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def explain_command(ctx: click.Context, property_id: str, fmt: str) -> None:
    """The story of one home, in time order: readiness events, rule decisions (each rule's
    condition, result and the values it read), duplicate blocks, orders and their status.

    The table shows one readable line per event; json and csv carry the full detail too.

    \b
    Example:
      propready explain DEN-00017
      propready explain DEN-00017 --format json
    """
    with _state(ctx) as connection:
        rows = audit.query_events(connection, external_property_id=property_id, limit=1_000_000)
        delivered = _deliverables_of_home(connection, rows) if fmt == "table" else []
    if not rows:
        raise click.ClickException(f"nothing recorded for property {property_id!r}")
    story: list[dict[str, Any]] = [{**row, "summary": summarise(row)} for row in rows]
    columns = STORY_TABLE_COLUMNS if fmt == "table" else STORY_JSON_COLUMNS
    emit(story, columns, fmt, title=f"property {property_id}")
    for external_order_id, shown in delivered:
        # The links and photos PlanOmatic delivered (json: `propready orders show ID`).
        emit(shown, DELIVERABLE_COLUMNS, fmt, title=f"delivered for {external_order_id}")


DELIVERABLE_COLUMNS = ("kind", "name", "sequence", "caption", "url")


def _deliverables_of_home(
    connection: sa.Connection, rows: list[dict[str, Any]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    found = []
    for row in rows:
        if row.get("kind") == AuditKind.ORDER_DELIVERED.value and row.get("order_id"):
            shown = deliverables_for(connection, int(row["order_id"]))
            if shown:
                found.append((str(row.get("external_order_id")), [asdict(d) for d in shown]))
    return found
