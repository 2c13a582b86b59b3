"""`propready attention`: everything waiting for a person; acknowledge or snooze an item."""

from __future__ import annotations

import csv
import getpass
import json
import os
import sys
from typing import Any

import click
import sqlalchemy as sa

from propready.adapters.store import migrate
from propready.cli.context import settings_from
from propready.core.attention import format_age, parse_duration
from propready.service.attention import AttentionError, Listed, attention_list, silence_item
from propready.settings import Settings
from propready.wiring import state_engine, utc_now

JSON_COLUMNS = (
    "item",
    "kind",
    "since",
    "age",
    "age_seconds",
    "overdue",
    "home",
    "order",
    "what",
    "do",
    "command",
    "silenced",
)


def operator() -> str:
    """Who is acting: the person behind sudo, else the login name."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or getpass.getuser()


def _engine(settings: Settings) -> sa.Engine:
    engine = state_engine(settings)
    try:
        at_head = migrate.is_at_head(engine)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise click.ClickException(
            f"state.url: cannot read the state database ({type(exc).__name__})"
        ) from None
    if not at_head:
        engine.dispose()
        raise click.ClickException(
            "the state database is not at the current schema; run `propready db upgrade`"
        )
    return engine


def _row(entry: Listed, now: Any) -> dict[str, Any]:
    item = entry.item
    silence = entry.silence
    silenced = None
    if silence is not None:
        silenced = (
            f"snoozed until {silence.until:%Y-%m-%d %H:%M}Z by {silence.by}: {silence.reason}"
            if silence.mode == "snooze" and silence.until is not None
            else f"acknowledged by {silence.by}: {silence.reason}"
        )
    return {
        "item": item.key,
        "kind": item.kind.value,
        "since": item.since.isoformat(),
        "age": format_age(item.age(now)),
        "age_seconds": int(item.age(now).total_seconds()),
        "overdue": entry.overdue,
        "home": item.external_property_id,
        "order": item.external_order_id,
        "what": item.what,
        "do": item.action,
        "command": item.command,
        "silenced": silenced,
    }


@click.group("attention", invoke_without_command=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("table", "json", "csv")),
    default="table",
    show_default=True,
    help="json prints one JSON array of objects.",
)
@click.option("--all", "show_all", is_flag=True, help="Also items acknowledged or snoozed.")
@click.pass_context
def attention_group(ctx: click.Context, fmt: str, show_all: bool) -> None:
    """Everything waiting for a person, oldest first; exit 1 when any item is overdue.

    Approvals, `unknown` and rejected orders, homes that could not be ordered, quarantined PM
    rows, a refused API key, a failing source, orders stuck at PlanOmatic, vendor cancels and
    failed write-backs: one line each with its age, the home, what to do and the command that
    does it. An item is overdue when it is older than its threshold ([notify]
    overdue_after_hours), which makes the command usable from monitoring. Acknowledged items
    stay hidden until they change, snoozed ones until the snooze ends (`--all` shows them).

    \b
    Examples:
      propready attention
      propready attention --format json | jq '.[] | select(.overdue)'
      propready attention ack unknown:pr-3f2a9c... --reason "asked PlanOmatic support"
      propready attention snooze quarantined:DEN-00017 --for 2d --reason "PM fix scheduled"
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_from(ctx)
    engine = _engine(settings)
    now = utc_now()
    try:
        listed = attention_list(engine, settings, now, include_silenced=show_all)
    finally:
        engine.dispose()
    rows = [_row(entry, now) for entry in listed]
    if fmt == "json":
        sys.stdout.write(json.dumps([{c: r[c] for c in JSON_COLUMNS} for r in rows]) + "\n")
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(JSON_COLUMNS)
        writer.writerows([["" if r[c] is None else r[c] for c in JSON_COLUMNS] for r in rows])
    elif not rows:
        click.echo("Nothing waits for a person.")
    else:
        # One line per item, never folded, so it reads in a terminal and greps in a pipe.
        click.echo(f"{len(rows)} item(s) waiting for a person, oldest first:")
        width = max(len(r["item"]) for r in rows)
        for r in rows:
            flag = "OVERDUE" if r["overdue"] else "       "
            line = (
                f"{r['age']:>7}  {flag}  {r['item']:<{width}}  {r['home'] or '-'}  "
                f"{r['what']}; {r['do']}: {r['command']}"
            )
            if r["silenced"]:
                line += f"  [{r['silenced']}]"
            click.echo(line)
    if any(entry.overdue and entry.silence is None for entry in listed):
        sys.exit(1)


def _silence(ctx: click.Context, item: str, reason: str, snooze_for: str | None) -> None:
    settings = settings_from(ctx)
    duration = None
    if snooze_for is not None:
        try:
            duration = parse_duration(snooze_for)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--for") from None
    engine = _engine(settings)
    try:
        silence = silence_item(
            engine,
            settings,
            item,
            reason=reason,
            by=operator(),
            now=utc_now(),
            snooze_for=duration,
        )
    except AttentionError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    if silence.until is not None:
        click.echo(f"snoozed {silence.item} until {silence.until:%Y-%m-%d %H:%M}Z")
    else:
        click.echo(f"acknowledged {silence.item}; it shows again when it changes")


@attention_group.command("ack")
@click.argument("item")
@click.option("--reason", required=True, help="Why; kept in the audit log.")
@click.pass_context
def ack_command(ctx: click.Context, item: str, reason: str) -> None:
    """Acknowledge an item: hidden until it changes (audited with the reason).

    \b
    Example:
      propready attention ack rejected:pr-3f2a9c... --reason "home withdrawn from marketing"
    """
    _silence(ctx, item, reason, None)


@attention_group.command("snooze")
@click.argument("item")
@click.option("--for", "snooze_for", required=True, help="How long: 30m, 4h, 2d, 1h30m.")
@click.option("--reason", required=True, help="Why; kept in the audit log.")
@click.pass_context
def snooze_command(ctx: click.Context, item: str, snooze_for: str, reason: str) -> None:
    """Snooze an item: hidden, and its notifications silenced, until the time is up (audited).

    \b
    Example:
      propready attention snooze source_failing:source --for 4h --reason "PM maintenance"
    """
    _silence(ctx, item, reason, snooze_for)
