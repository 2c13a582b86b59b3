"""`propready orders ...`: look at the order outbox and act on single orders."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta

import click
import sqlalchemy as sa

from propready.adapters.planomatic import PlanomaticClient, VendorError
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.store import lifecycle, outbox
from propready.adapters.store.deliverables import deliverables_for
from propready.cli.context import operator_name, settings_from
from propready.cli.output import FORMATS, emit
from propready.core.budgets import Budget
from propready.core.orders import CANCEL_REASONS, OrderState
from propready.service.components import CycleSummary
from propready.service.operator import OrderActionError, approve, cancel, hold, resolve
from propready.service.status_sync import sync_backlog, sync_statuses
from propready.settings import Settings
from propready.wiring import catalog_for, components, state_engine, utc_now, vendor_client

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
    "spend_cents",
    "held_by_budget",
)
ACTION_COLUMNS = ("id", "external_order_id", "external_property_id", "state", "vendor_status")
SYNC_INTERVAL = timedelta(minutes=15)  # orders checked this recently are skipped unless --all
SYNC_COLUMNS = (
    "external_order_id",
    "external_property_id",
    "vendor_order_id",
    "old_status",
    "new_status",
    "state",
)


@click.group("orders")
def orders_group() -> None:
    """Operate on orders in the outbox.

    \b
    Example:
      propready orders list --state unknown
      propready orders approve pr-3f2a9c...
      propready orders hold pr-3f2a9c... --reason "tenant still moving out"
      propready orders cancel pr-3f2a9c... --notes "home sold"
    """


DELIVERED = "delivered"  # not a state: placed orders the vendor delivered (delivered_at set)
DELIVERABLE_COLUMNS = ("kind", "name", "sequence", "caption", "url")


@orders_group.command("list")
@click.option(
    "--state",
    type=click.Choice([*(s.value for s in OrderState), DELIVERED]),
    help="Only this state (delivered: orders PlanOmatic delivered).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--limit", type=click.IntRange(1), default=500, show_default=True)
@click.pass_context
def list_command(ctx: click.Context, state: str | None, fmt: str, limit: int) -> None:
    """List orders, oldest first.

    \b
    Example:
      propready orders list --state placed --format csv > placed.csv
      propready orders list --state delivered
    """
    settings = settings_from(ctx)
    engine = state_engine(settings)
    columns: tuple[str, ...] = LIST_COLUMNS
    try:
        with engine.begin() as connection:
            if state == DELIVERED:
                found = lifecycle.list_delivered(connection, limit=limit)
                columns = (*LIST_COLUMNS, "delivered_at")
            else:
                found = outbox.list_orders(connection, state=state, limit=limit)
            rows = [o.as_dict() for o in found]
    finally:
        engine.dispose()
    emit(rows, columns, fmt, title="orders")


@orders_group.command("show")
@click.argument("external_order_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def show_command(ctx: click.Context, external_order_id: str, fmt: str) -> None:
    """Show one order with the services it asked for (access codes are never shown) and what
    PlanOmatic delivered (links and photos).

    \b
    Example:
      propready orders show pr-3f2a9c...
    """
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        with engine.begin() as connection:
            row = outbox.find_by_external_order_id(connection, external_order_id)
            delivered = deliverables_for(connection, row.id) if row is not None else []
    finally:
        engine.dispose()
    if row is None:
        raise click.ClickException(f"no order {external_order_id!r}")
    payload = dict(row.payload)
    access = dict(payload.get("property_access", {}))
    if access.get("access_code"):
        access["access_code"] = "***"
    payload["property_access"] = access
    shown = [asdict(d) for d in delivered]
    if fmt in ("json", "jsonl"):  # one object: the deliverables are a member of it
        columns = (*LIST_COLUMNS, "delivered_at", "payload", "deliverables")
        emit([{**row.as_dict(), "payload": payload, "deliverables": shown}], columns, fmt)
        return
    emit([{**row.as_dict(), "payload": payload}], (*LIST_COLUMNS, "payload"), fmt, title="order")
    if shown and fmt == "table":
        emit(shown, DELIVERABLE_COLUMNS, fmt, title=f"delivered {row.delivered_at or ''}")


@contextmanager
def _state_and_client(settings: Settings) -> Iterator[tuple[sa.Engine, PlanomaticClient | None]]:
    engine = state_engine(settings)
    client = None
    if settings.orders.mode != "dry_run":
        client = vendor_client(settings)
    try:
        yield engine, client
    except (OrderActionError, VendorError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if client is not None:
            client.close()
        engine.dispose()


@orders_group.command("approve")
@click.argument("external_order_ids", nargs=-1, required=True)
@click.option(
    "--over-budget",
    is_flag=True,
    help="Approve an order a budget held even if it still exceeds that budget (needs --reason).",
)
@click.option("--reason", help="Why the budget may be exceeded (recorded in the audit log).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def approve_command(
    ctx: click.Context,
    external_order_ids: tuple[str, ...],
    over_budget: bool,
    reason: str | None,
    fmt: str,
) -> None:
    """Release orders waiting for approval (awaiting_approval -> planned); the next cycle sends.

    An order held by a budget is checked against the rule files' budgets again: it is released
    when the budget has room now (it then counts in today's period), and otherwise only with
    --over-budget --reason TEXT, which the audit log records.

    \b
    Example:
      propready orders list --state awaiting_approval
      propready orders approve pr-3f2a9c... pr-81b0d4...
      propready orders approve pr-3f2a9c... --over-budget --reason "Q4 push, ok'd by finance"
    """
    if over_budget and not (reason or "").strip():
        raise click.UsageError("--over-budget needs --reason TEXT (it is audited)")
    settings = settings_from(ctx)
    approved = []

    @functools.cache
    def budgets() -> tuple[Budget, ...]:
        return load_rule_set(settings.rules.path, catalog_for(settings)).budgets

    with _state_and_client(settings) as (engine, _client):
        for external_order_id in external_order_ids:
            approved.append(
                approve(
                    engine,
                    external_order_id,
                    utc_now(),
                    operator_name(),
                    budgets=budgets,
                    zone=settings.source.zone,
                    over_budget_reason=reason if over_budget else None,
                )
            )
    emit([o.as_dict() for o in approved], ACTION_COLUMNS, fmt, title="approved")


@orders_group.command("hold")
@click.argument("external_order_ids", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why it waits (recorded in the audit log).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def hold_command(
    ctx: click.Context, external_order_ids: tuple[str, ...], reason: str, fmt: str
) -> None:
    """Stop planned orders before they are sent (planned -> awaiting_approval).

    A held order waits like an order in approval mode until `orders approve` releases it, or
    `orders cancel` cancels it (which keeps the home's readiness open). Only planned orders can
    be held: one being sent may already be at PlanOmatic.

    \b
    Example:
      propready orders list --state planned
      propready orders hold pr-3f2a9c... --reason "tenant still moving out"
    """
    settings = settings_from(ctx)
    held = []
    engine = state_engine(settings)
    try:
        for external_order_id in external_order_ids:
            held.append(hold(engine, external_order_id, reason, utc_now(), operator_name()))
    except OrderActionError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    emit([o.as_dict() for o in held], ACTION_COLUMNS, fmt, title="held")


@orders_group.command("cancel")
@click.argument("external_order_id")
@click.option(
    "--reason",
    type=click.Choice(CANCEL_REASONS),
    default="client_requested_cancelation",
    show_default=True,
    help="PlanOmatic's cancelation_reason.",
)
@click.option("--notes", required=True, help="Why, for PlanOmatic: 1 to 255 characters.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def cancel_command(
    ctx: click.Context, external_order_id: str, reason: str, notes: str, fmt: str
) -> None:
    """Cancel an order: locally if it was never sent, else at PlanOmatic.

    PlanOmatic cancels only orders still in new_request, ordered or scheduling; later ones
    need an email to its support, and the refusal says so. A canceled order frees the
    property's duplicate window.

    \b
    Example:
      propready orders cancel pr-3f2a9c... --reason duplicate_order --notes "ordered by hand"
    """
    settings = settings_from(ctx)
    with _state_and_client(settings) as (engine, client):
        row = cancel(engine, client, external_order_id, reason, notes, utc_now(), operator_name())
    emit([row.as_dict()], ACTION_COLUMNS, fmt, title="canceled")


@orders_group.command("resolve")
@click.argument("external_order_id")
@click.option("--vendor-order-id", help="PlanOmatic's order id found in its portal: placed.")
@click.option("--not-placed", is_flag=True, help="PlanOmatic has no such order: failed.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def resolve_command(
    ctx: click.Context,
    external_order_id: str,
    vendor_order_id: str | None,
    not_placed: bool,
    fmt: str,
) -> None:
    """Settle an `unknown` order after looking it up in PlanOmatic's portal.

    --vendor-order-id retrieves the order to confirm it is this one and marks it placed;
    --not-placed marks it failed, which frees the window so the home can be ordered again.

    \b
    Example:
      propready orders list --state unknown
      propready orders resolve pr-3f2a9c... --vendor-order-id 100234
      propready orders resolve pr-81b0d4... --not-placed
    """
    settings = settings_from(ctx)
    with _state_and_client(settings) as (engine, client):
        row = resolve(
            engine,
            client,
            external_order_id,
            utc_now(),
            operator_name(),
            vendor_order_id=vendor_order_id,
            not_placed=not_placed,
        )
    emit([row.as_dict()], ACTION_COLUMNS, fmt, title="resolved")


@orders_group.command("sync")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Also orders checked in the last 15 minutes (skipped otherwise, and counted).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def sync_command(ctx: click.Context, limit: int, every: bool, fmt: str) -> None:
    """Retrieve placed orders from PlanOmatic and record each status change in the audit log.

    \b
    Example:
      propready orders sync --format json
    """
    settings = settings_from(ctx)
    if settings.orders.mode == "dry_run":
        raise click.ClickException("dry_run mode sends nothing to PlanOmatic, retrieve included")
    min_interval = None if every else SYNC_INTERVAL
    with components(settings) as parts:
        backlog = sync_backlog(parts, utc_now(), min_interval)
        summary = CycleSummary()
        changes = sync_statuses(parts, utc_now(), summary, min_interval=min_interval, limit=limit)
    emit([asdict(c) for c in changes], SYNC_COLUMNS, fmt, title="status changes")
    click.echo(
        f"{summary.status_checked} order(s) retrieved, {summary.status_changed} changed",
        err=True,
    )
    if backlog.recently_checked:
        click.echo(
            f"{backlog.recently_checked} placed order(s) skipped: checked in the last "
            f"{SYNC_INTERVAL.seconds // 60} minutes (the daemon keeps checking them); "
            "--all includes them",
            err=True,
        )
    if backlog.due > limit:
        click.echo(
            f"{backlog.due - limit} more order(s) due: run it again or raise --limit", err=True
        )
