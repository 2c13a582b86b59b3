"""`propready report`: a self-contained HTML report of the audit log, for people who would
rather look than read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from propready.cli.context import settings_from
from propready.report.page import collect, render
from propready.wiring import state_engine


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@click.command("report")
@click.option(
    "--since", type=click.DateTime(), required=True, help="From this time (UTC unless offset)."
)
@click.option("--until", type=click.DateTime(), help="Before this time [default: now].")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
@click.pass_context
def report_command(ctx: click.Context, since: datetime, until: datetime | None, out: Path) -> None:
    """Write an HTML report: orders placed and spend (canceled orders left out, today included
    up to now), spend per billing entity and month, one line per home ordered, and charts of
    orders per week by billing entity, decisions by outcome, readiness-to-order latency and
    the top rejection reasons.

    The file is self-contained (inline SVG and CSS, no script, no network): mail it or open it
    anywhere.

    \b
    Example:
      propready report --since 2026-10-01 --out report.html
    """
    settings = settings_from(ctx)
    now = datetime.now(UTC)
    engine = state_engine(settings)
    try:
        with engine.connect() as connection:
            data = collect(connection, _aware(since), _aware(until) if until else now)
    finally:
        engine.dispose()
    try:
        out.write_text(render(data, now), encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"--out: cannot write {out} ({exc.strerror or exc})") from None
    click.echo(f"wrote {out}")
