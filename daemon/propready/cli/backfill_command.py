"""`propready backfill`: order homes that were already ready when propready first saw them."""

from __future__ import annotations

import click
from rich.console import Console
from rich.progress import Progress

from propready.cli.context import settings_from
from propready.cli.output import FORMATS, emit
from propready.service.backfill import BackfillBusy, backfill, backfill_candidates
from propready.wiring import components, utc_now


@click.command("backfill")
@click.option("--trigger", help="Only this trigger (default: every trigger).")
@click.option("--dry-run", is_flag=True, help="List what would fire; change and send nothing.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def backfill_command(ctx: click.Context, trigger: str | None, dry_run: bool, fmt: str) -> None:
    """Order homes that were ready at first sight, and readiness decided in dry run.

    With `first_sight = "ignore"` (the default) propready does not order homes that were
    already ready when it first saw them, and in dry run it orders nothing (dry run consumes
    nothing). A backfill orders them on purpose: each home is re-read from the source, its
    trigger checked again, and the readiness goes through the rules, the duplicate window and
    the outbox like any other. Orders are sent by the next cycle. --dry-run reads and checks
    the same way and lists what would fire. Run it with --dry-run first.

    \b
    Example:
      propready backfill --trigger vacant_ready --dry-run
      propready backfill --trigger vacant_ready
    """
    settings = settings_from(ctx)
    with components(settings) as parts:
        if trigger is not None and trigger not in parts.rules.triggers:
            known = ", ".join(sorted(parts.rules.triggers))
            raise click.BadParameter(
                f"unknown trigger {trigger!r} (known: {known})", param_hint="--trigger"
            )
        total = len(backfill_candidates(parts, trigger))
        console = Console(stderr=True)
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("backfill", total=total)
            try:
                rows = backfill(
                    parts,
                    utc_now,
                    dry_run=dry_run,
                    trigger=trigger,
                    progress=lambda n: bar.advance(task, n),
                )
            except BackfillBusy as exc:
                raise click.ClickException(str(exc)) from None
    listing = [
        {"external_property_id": r.external_property_id, "trigger": r.trigger_name, "kind": r.kind}
        for r in rows
    ]
    emit(
        listing,
        ("external_property_id", "trigger", "kind"),
        fmt,
        title="would fire" if dry_run else "fired",
    )
    if fmt == "table":
        verb = "would fire" if dry_run else "fired"
        click.echo(f"{len(rows)} event(s) {verb}", err=True)
