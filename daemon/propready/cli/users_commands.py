"""`propready users ...`: the people who may log in to the web console."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import sqlalchemy as sa

from propready.adapters.store import migrate
from propready.adapters.store.console_users import ROLES
from propready.cli.context import operator_name, settings_from
from propready.cli.output import FORMATS, emit
from propready.service.console_users import (
    UserError,
    add_user,
    list_users,
    remove_user,
    set_disabled,
    set_password,
)
from propready.wiring import state_engine, utc_now

LIST_COLUMNS = ("name", "role", "password", "disabled", "created_at", "updated_at")


@contextmanager
def _state(ctx: click.Context) -> Iterator[sa.Engine]:
    settings = settings_from(ctx)
    engine = state_engine(settings)
    try:
        if not migrate.is_at_head(engine):
            raise click.ClickException(
                "the state database is not at the current schema; run `propready db upgrade`"
            )
        yield engine
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


def _read_password(password_file: Path | None) -> str:
    """The first line of PATH without its newline, else asked twice on the terminal."""
    if password_file is not None:
        try:
            text = password_file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise click.ClickException(
                f"--password-file: cannot read {password_file} ({reason})"
            ) from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise click.ClickException(f"--password-file: {password_file} has an empty first line")
        return lines[0]
    password: str = click.prompt(
        "Password", hide_input=True, confirmation_prompt="Repeat the password"
    )
    return password


_PASSWORD_FILE = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the password from the first line of this file (for scripts) instead of asking.",
)


@click.group("users")
def users_group() -> None:
    """The people who may log in to the web console ([console] in the config).

    Roles: viewer (reads every page), approver (also approves, cancels, resolves, reorders and
    acknowledges), admin (also sees the users). Every change is audited with who made it.

    \b
    Example:
      propready users add alice --role approver
      propready users add bob --role viewer --password-file /run/secrets/bob
      propready users list
    """


@users_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the user may do.")
@_PASSWORD_FILE
@click.option(
    "--no-password",
    is_flag=True,
    help='For [console] auth = "proxy": the reverse proxy authenticates; no password is kept.',
)
@click.pass_context
def add_command(
    ctx: click.Context, name: str, role: str, password_file: Path | None, no_password: bool
) -> None:
    """Add a console user; the password is asked twice (or read with --password-file).

    Passwords have at least 12 characters and are kept as argon2id hashes.

    \b
    Example:
      propready users add alice --role approver
      propready users add carol@example.com --role viewer --no-password
    """
    if no_password and password_file is not None:
        raise click.UsageError("give --password-file or --no-password, not both")
    with _state(ctx) as engine:
        password = None if no_password else _read_password(password_file)
        user = add_user(engine, name, role, password, by=operator_name(), now=utc_now())
    click.echo(f"added {user.name} ({user.role})")


@users_group.command("passwd")
@click.argument("name")
@_PASSWORD_FILE
@click.pass_context
def passwd_command(ctx: click.Context, name: str, password_file: Path | None) -> None:
    """Set a user's password (a reset too); their open sessions end.

    \b
    Example:
      propready users passwd alice
    """
    with _state(ctx) as engine:
        password = _read_password(password_file)
        set_password(engine, name, password, by=operator_name(), now=utc_now())
    click.echo(f"password of {name} changed; their sessions ended")


@users_group.command("list")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def list_command(ctx: click.Context, fmt: str) -> None:
    """List the console users (never their password hashes).

    \b
    Example:
      propready users list --format json
    """
    with _state(ctx) as engine:
        users = list_users(engine)
    rows = [
        {
            "name": u.name,
            "role": u.role,
            "password": "set" if u.password_hash else "none (proxy)",
            "disabled": u.disabled,
            "created_at": u.created_at,
            "updated_at": u.updated_at,
        }
        for u in users
    ]
    emit(rows, LIST_COLUMNS, fmt, title="console users")


@users_group.command("remove")
@click.argument("name")
@click.pass_context
def remove_command(ctx: click.Context, name: str) -> None:
    """Remove a user; their sessions end at once.

    \b
    Example:
      propready users remove bob
    """
    with _state(ctx) as engine:
        remove_user(engine, name, by=operator_name(), now=utc_now())
    click.echo(f"removed {name}")


@users_group.command("disable")
@click.argument("name")
@click.pass_context
def disable_command(ctx: click.Context, name: str) -> None:
    """Refuse a user's logins and end their sessions, keeping the user (`enable` undoes it).

    \b
    Example:
      propready users disable bob
    """
    with _state(ctx) as engine:
        set_disabled(engine, name, True, by=operator_name(), now=utc_now())
    click.echo(f"disabled {name}")


@users_group.command("enable")
@click.argument("name")
@click.pass_context
def enable_command(ctx: click.Context, name: str) -> None:
    """Let a disabled user log in again.

    \b
    Example:
      propready users enable bob
    """
    with _state(ctx) as engine:
        set_disabled(engine, name, False, by=operator_name(), now=utc_now())
    click.echo(f"enabled {name}")
