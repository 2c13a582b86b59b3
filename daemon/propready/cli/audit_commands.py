"""`propready audit` and `propready explain`: read the audit log."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from propready.adapters.store import audit
from propready.adapters.store.engine import create_state_engine
from propready.cli.context import settings_from
from propready.cli.output import FORMATS, emit

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


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@click.command("audit")
@click.option("--property", "property_id", help="Only this external_property_id.")
@click.option("--kind", "kinds", multiple=True, help="Only these event kinds (repeatable).")
@click.option("--rule", "rule_id", help="Only this rule id.")
@click.option(
    "--since", type=click.DateTime(), help="From this time (UTC unless it has an offset)."
)
@click.option("--until", type=click.DateTime(), help="Before this time.")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def audit_command(
    ctx: click.Context,
    property_id: str | None,
    kinds: tuple[str, ...],
    rule_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    fmt: str,
) -> None:
    """Query the audit log, oldest first.

    \b
    Example:
      propready audit --kind order_placed --since 2026-11-01 --format csv
    """
    settings = settings_from(ctx)
    engine = create_state_engine(settings.state.url)
    try:
        with engine.begin() as connection:
            rows = audit.query_events(
                connection,
                external_property_id=property_id,
                kinds=kinds,
                rule_id=rule_id,
                since=_aware(since),
                until=_aware(until),
                limit=limit,
            )
    finally:
        engine.dispose()
    emit(rows, COLUMNS, fmt, title="audit log")


@click.command("explain")
@click.argument("property_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def explain_command(ctx: click.Context, property_id: str, fmt: str) -> None:
    """The story of one home: its readiness events, rule decisions, blocks and orders, in order.

    \b
    Example:
      propready explain DEN-00017
    """
    settings = settings_from(ctx)
    engine = create_state_engine(settings.state.url)
    try:
        with engine.begin() as connection:
            rows = audit.query_events(connection, external_property_id=property_id, limit=100_000)
    finally:
        engine.dispose()
    if not rows:
        raise click.ClickException(f"nothing recorded for property {property_id!r}")
    emit(rows, COLUMNS, fmt, title=f"property {property_id}")
