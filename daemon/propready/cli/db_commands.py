"""`propready db ...`: the state database's schema."""

from __future__ import annotations

import click

from propready.adapters.store import migrate
from propready.cli.context import settings_from
from propready.wiring import state_engine


@click.group("db")
def db_group() -> None:
    """Manage propready's own state database (SQLite or PostgreSQL).

    \b
    Example:
      propready --config /etc/propready/propready.toml db upgrade
    """


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.pass_context
def upgrade_command(ctx: click.Context, revision: str) -> None:
    """Apply the migrations to the state database named by [state] url.

    Safe to run again: a database already at the target is left as it is.

    \b
    Example:
      propready --config /etc/propready/propready.toml db upgrade
    """
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        before, after = migrate.upgrade(engine, revision)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"state database already at {after}")
    else:
        click.echo(f"state database upgraded from {before or 'empty'} to {after}")


@db_group.command("current")
@click.pass_context
def current_command(ctx: click.Context) -> None:
    """Show the state database's schema revision and the newest one this version knows.

    \b
    Example:
      propready db current
    """
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    click.echo(f"current: {current or 'empty'}  head: {migrate.head_revision()}")
