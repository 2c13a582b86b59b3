"""`propready orders ...`: look at the order outbox."""

from __future__ import annotations

import click

from propready.adapters.store import outbox
from propready.adapters.store.engine import create_state_engine
from propready.cli.context import settings_from
from propready.cli.output import FORMATS, emit
from propready.core.orders import OrderState

LIST_COLUMNS = (
    "id",
    "external_order_id",
    "external_property_id",
    "state",
    "vendor_status",
    "vendor_order_id",
    "rule_id",
    "billing_entity_slug",
    "created_at",
    "attempts",
    "last_error",
)


@click.group("orders")
def orders_group() -> None:
    """Operate on orders in the outbox.

    \b
    Example:
      propready orders list --state unknown
    """


@orders_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in OrderState]), help="Only this state.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--limit", type=click.IntRange(1), default=500, show_default=True)
@click.pass_context
def list_command(ctx: click.Context, state: str | None, fmt: str, limit: int) -> None:
    """List orders, oldest first.

    \b
    Example:
      propready orders list --state placed --format csv > placed.csv
    """
    settings = settings_from(ctx)
    engine = create_state_engine(settings.state.url)
    try:
        with engine.begin() as connection:
            rows = outbox.list_orders(connection, state=state, limit=limit)
    finally:
        engine.dispose()
    emit(rows, LIST_COLUMNS, fmt, title="orders")


@orders_group.command("show")
@click.argument("external_order_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def show_command(ctx: click.Context, external_order_id: str, fmt: str) -> None:
    """Show one order with the services it asked for (access codes are never shown).

    \b
    Example:
      propready orders show pr-3f2a9c...
    """
    settings = settings_from(ctx)
    engine = create_state_engine(settings.state.url)
    try:
        with engine.begin() as connection:
            row = outbox.find_by_external_order_id(connection, external_order_id)
    finally:
        engine.dispose()
    if row is None:
        raise click.ClickException(f"no order {external_order_id!r}")
    payload = dict(row["payload"])
    access = dict(payload.get("property_access", {}))
    if access.get("access_code"):
        access["access_code"] = "***"
    payload["property_access"] = access
    row["payload"] = payload
    emit([row], (*LIST_COLUMNS, "payload"), fmt, title="order")
