"""`propready notify ...`: try the notification channels."""

from __future__ import annotations

import sys

import click

from propready.cli.context import settings_from
from propready.service.notify import send_test


@click.group("notify")
def notify_group() -> None:
    """Notification channels ([notify] urls).

    \b
    Example:
      propready notify test
    """


@notify_group.command("test")
@click.pass_context
def test_command(ctx: click.Context) -> None:
    """Send a test message to each channel; one line per channel; exit 1 if any failed.

    The URLs are shown with their secrets masked.

    \b
    Example:
      propready notify test
    """
    settings = settings_from(ctx)
    results = send_test(settings)
    if not results:
        raise click.ClickException("notify.urls: no notification URLs are configured")
    for result in results:
        if result.ok:
            click.echo(f"ok    {result.label}")
        else:
            click.echo(f"FAIL  {result.label}: {result.error}")
    if not all(result.ok for result in results):
        sys.exit(1)
