"""`propready reorder`: order a home now, on purpose, through the live rules."""

from __future__ import annotations

import click

from propready.cli.context import operator_name, settings_from
from propready.service.reorder import ReorderRefused, reorder
from propready.wiring import components, utc_now


@click.command("reorder")
@click.argument("property_id")
@click.option("--reason", required=True, help="Why, for the audit log (with who asked).")
@click.option("--trigger", help="Decide as if this trigger fired (default: one that holds now).")
@click.option(
    "--ignore-window",
    is_flag=True,
    help="Order even inside another order's duplicate window (an audited override).",
)
@click.pass_context
def reorder_command(
    ctx: click.Context, property_id: str, reason: str, trigger: str | None, ignore_window: bool
) -> None:
    """Order a home now through the live rules, or say in one line why it cannot be ordered.

    The home's current row is read from the source and decided by the live rules for the named
    trigger (default: the first trigger that holds now, else the trigger of its latest
    readiness); the order goes to the outbox and the next send cycle sends it. Use it after a
    rejected, canceled or never-placed order once the cause is fixed, or to photograph a home
    again. Audited with the reason and the operator ($SUDO_USER, else $USER).

    \b
    Example:
      propready reorder DEN-00097 --reason "lockbox code fixed in Yardi"
      propready reorder DEN-00097 --trigger vacant_ready --ignore-window --reason "reshoot"
    """
    settings = settings_from(ctx)
    with components(settings) as parts:
        try:
            done = reorder(
                parts,
                property_id,
                reason=reason,
                by=operator_name(),
                now=utc_now(),
                trigger=trigger,
                ignore_window=ignore_window,
            )
        except ReorderRefused as exc:
            raise click.ClickException(f"cannot reorder {property_id}: {exc}") from None
    window = "; the duplicate window was overridden" if done.window_ignored else ""
    click.echo(
        f"ordered {done.external_property_id} ({done.trigger_name}): {done.external_order_id}, "
        f"{done.state}{window}; the next send cycle sends it"
    )
