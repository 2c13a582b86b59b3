"""`propready sending status|pause|resume`: sending to PlanOmatic, for every host at once."""

from __future__ import annotations

import click

from propready.cli.context import operator_name, settings_from
from propready.service.sending_control import (
    SendingControlError,
    pause_sending,
    resume_sending,
    sending_status,
)
from propready.wiring import state_engine, utc_now


@click.group("sending")
def sending_group() -> None:
    """Pause or resume sending orders to PlanOmatic on every host sharing the state database.

    The daemon pauses by itself when PlanOmatic refuses the API key; orders then wait in
    `planned`, and a configuration with another key lifts the pause on its first accepted order.

    \b
    Example:
      propready sending status
      propready sending pause --reason "PlanOmatic maintenance until 14:00"
      propready sending resume --reason "maintenance over"
    """


@sending_group.command("status")
@click.pass_context
def status_command(ctx: click.Context) -> None:
    """Say whether sending is paused, since when, why and by whom (exit 1 when paused).

    \b
    Example:
      propready sending status
    """
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        paused = sending_status(engine)
    finally:
        engine.dispose()
    if paused is None:
        click.echo("sending: active")
        return
    click.echo(
        f"sending: paused since {paused.paused_at:%Y-%m-%d %H:%M:%S} UTC by {paused.paused_by}: "
        f"{paused.reason}"
    )
    ctx.exit(1)


@sending_group.command("pause")
@click.option("--reason", required=True, help="Why, for the audit log.")
@click.pass_context
def pause_command(ctx: click.Context, reason: str) -> None:
    """Pause sending for every host until `propready sending resume` (audited).

    \b
    Example:
      propready sending pause --reason "PlanOmatic maintenance until 14:00"
    """
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        pause_sending(engine, reason, operator_name(), utc_now())
    except SendingControlError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo("sending: paused for every host; orders wait in planned")


@sending_group.command("resume")
@click.option("--reason", required=True, help="Why, for the audit log.")
@click.pass_context
def resume_command(ctx: click.Context, reason: str) -> None:
    """Resume sending (also after a refused API key, once the key is fixed), audited.

    \b
    Example:
      propready sending resume --reason "new API key installed"
    """
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        was = resume_sending(engine, reason, operator_name(), utc_now())
    except SendingControlError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"sending: resumed (it was paused: {was.reason})")
