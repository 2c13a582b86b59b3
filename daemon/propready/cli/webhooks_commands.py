"""`propready webhooks list/show/replay`: the deliveries `propready serve` stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
import sqlalchemy as sa

from propready.adapters.store import deliveries
from propready.cli.context import settings_from
from propready.cli.output import FORMATS, emit
from propready.core.webhook_delivery import DeliveryState
from propready.wiring import state_engine

COLUMNS = (
    "id",
    "received_at",
    "state",
    "event",
    "order_status",
    "vendor_order_id",
    "external_order_id",
    "external_property_id",
    "event_at",
    "applied_at",
    "problem",
)
STATES = tuple(state.value for state in DeliveryState)


@contextmanager
def _state(ctx: click.Context, *, write: bool = False) -> Iterator[sa.Connection]:
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        with engine.begin() if write else engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@click.group("webhooks")
def webhooks_group() -> None:
    """Read and replay the webhook deliveries that `propready serve` stored.

    \b
    Example:
      propready webhooks list --state malformed
    """


@webhooks_group.command("list")
@click.option(
    "--state",
    "states",
    type=click.Choice(STATES),
    multiple=True,
    help="Only deliveries in this state (repeatable).",
)
@click.option("--since", type=click.DateTime(), help="Received at or after (UTC unless offset).")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def list_command(
    ctx: click.Context,
    states: tuple[str, ...],
    since: datetime | None,
    limit: int,
    fmt: str,
) -> None:
    """Stored deliveries in the order they arrived, with what each says and its state.

    States: pending (waiting for the daemon to apply it), applied, unmatched (names no order
    of ours yet), malformed (not news about an order: kept for a person, never applied).

    \b
    Examples:
      propready webhooks list --state malformed --state unmatched
      propready webhooks list --since 2026-12-01 --format csv
    """
    with _state(ctx) as connection:
        found = deliveries.list_deliveries(
            connection,
            states=[DeliveryState(state) for state in states],
            since=_aware(since),
            limit=limit,
        )
    rows = [{column: getattr(delivery, column) for column in COLUMNS} for delivery in found]
    emit(rows, COLUMNS, fmt, title="webhook deliveries")


@webhooks_group.command("show")
@click.argument("delivery_id", type=click.IntRange(1))
@click.pass_context
def show_command(ctx: click.Context, delivery_id: int) -> None:
    """One delivery: its fields and the body as stored (secrets masked).

    \b
    Example:
      propready webhooks show 42
    """
    with _state(ctx) as connection:
        delivery = deliveries.get_delivery(connection, delivery_id)
    if delivery is None:
        raise click.ClickException(f"no webhook delivery {delivery_id}")
    for column in (*COLUMNS, "dedupe_hash"):
        value: Any = getattr(delivery, column)
        shown = value.isoformat() if isinstance(value, datetime) else value
        click.echo(f"{column + ':':<22}{'' if shown is None else shown}")
    click.echo("body:")
    if delivery.body is not None:
        click.echo(json.dumps(delivery.body, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        click.echo(delivery.raw_text or "")


@webhooks_group.command("replay")
@click.option("--id", "delivery_id", type=click.IntRange(1), help="Replay this delivery.")
@click.option("--since", type=click.DateTime(), help="Replay every delivery received since.")
@click.pass_context
def replay_command(ctx: click.Context, delivery_id: int | None, since: datetime | None) -> None:
    """Have the daemon apply stored deliveries again (clears applied_at).

    Harmless by design: applying news twice changes nothing, and an older status never
    overwrites a newer one. Useful after fixing an order that a delivery could not be matched
    to, or after restoring the state database. Malformed deliveries are never applied.

    \b
    Examples:
      propready webhooks replay --id 42
      propready webhooks replay --since 2026-12-01T00:00:00
    """
    if delivery_id is None and since is None:
        raise click.UsageError("name the deliveries: --id N or --since TIME")
    with _state(ctx, write=True) as connection:
        count = deliveries.replay(connection, delivery_id=delivery_id, since=_aware(since))
    click.echo(f"{count} deliveries will be applied again")
