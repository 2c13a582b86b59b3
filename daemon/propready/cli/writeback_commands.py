"""`propready writeback list|retry`: the write-back of delivered orders to the PM system."""

from __future__ import annotations

import click

from propready.adapters.store import writebacks
from propready.adapters.store.engine import reading
from propready.cli.context import operator_name, settings_from
from propready.cli.output import FORMATS, emit
from propready.core.writeback import WritebackState
from propready.service.writeback import WritebackRetryError, request_retry
from propready.wiring import state_engine, utc_now

COLUMNS = (
    "external_order_id",
    "external_property_id",
    "state",
    "attempts",
    "next_attempt_at",
    "last_error",
    "done_at",
    "created_at",
)
STATES = tuple(state.value for state in WritebackState)


@click.group("writeback")
def writeback_group() -> None:
    """Write-backs of delivered orders to the PM system ([writeback] url and statement).

    \b
    Example:
      propready writeback list --state failed --state given_up
      propready writeback retry pr-8f3a2c --reason "units table fixed"
    """


@writeback_group.command("list")
@click.option(
    "--state",
    "states",
    type=click.Choice(STATES),
    multiple=True,
    help="Only write-backs in this state (repeatable).",
)
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def list_command(ctx: click.Context, states: tuple[str, ...], limit: int, fmt: str) -> None:
    """List write-backs, oldest first: state, attempts, the next attempt and the last error.

    \b
    Example:
      propready writeback list --state given_up --format json
    """
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        with reading(engine) as connection:
            found = writebacks.list_writebacks(
                connection, states=[WritebackState(state) for state in states], limit=limit
            )
    finally:
        engine.dispose()
    rows = [
        {
            "external_order_id": row.external_order_id,
            "external_property_id": row.params.external_property_id,
            "state": row.state.value,
            "attempts": row.attempts,
            "next_attempt_at": row.next_attempt_at
            if row.state in (WritebackState.PENDING, WritebackState.FAILED)
            else None,
            "last_error": row.last_error,
            "done_at": row.done_at,
            "created_at": row.created_at,
        }
        for row in found
    ]
    emit(rows, COLUMNS, fmt, title="write-backs")


@writeback_group.command("retry")
@click.argument("order")
@click.option("--reason", required=True, help="Why, for the audit log.")
@click.pass_context
def retry_command(ctx: click.Context, order: str, reason: str) -> None:
    """Write an order back again now: a failed or given-up one gets a fresh give-up period.

    ORDER is the order's external_order_id. Audited (`writeback_retry_requested`) with the
    reason and the operator; the daemon (or the next `run --once`) runs the statement.

    \b
    Example:
      propready writeback retry pr-8f3a2c --reason "units table fixed"
    """
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        was = request_retry(engine, order, reason, operator_name(), utc_now())
    except WritebackRetryError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"writeback {order}: due now (was {was.state.value}, {was.attempts} attempt(s))")
