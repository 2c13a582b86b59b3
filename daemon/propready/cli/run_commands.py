"""`propready run` and `propready check`."""

from __future__ import annotations

import sys

import click
import structlog

from propready.adapters.store import migrate
from propready.cli.context import settings_from
from propready.cli.progress import row_progress
from propready.service import run_cycle
from propready.service.preflight import run_checks
from propready.settings import Settings, resolve_config_path
from propready.wiring import components, state_engine, utc_now

log = structlog.get_logger("propready.run")


def _require_migrated(settings: Settings) -> None:
    engine = state_engine(settings)
    try:
        if not migrate.is_at_head(engine):
            raise click.ClickException(
                "the state database is not at the current schema; run `propready db upgrade`"
            )
    finally:
        engine.dispose()


@click.command("run")
@click.option("--once", is_flag=True, help="Run one full cycle (poll, decide, send), then exit.")
@click.pass_context
def run_command(ctx: click.Context, once: bool) -> None:
    """Run the daemon: poll the PM database, decide, and send orders until SIGTERM.

    Jobs run on their intervals (poll, full pass, send, recovery, status sync, rule-file
    watch). Under systemd (Type=notify) it reports READY, STATUS and WATCHDOG on
    $NOTIFY_SOCKET. SIGHUP reloads the config file and the rule files; SIGTERM finishes the
    request in flight and exits 0. Metrics and health are served on [metrics] listen.

    With --once, run one cycle and exit (cron, trials).

    \b
    Examples:
      propready --config /etc/propready/propready.toml run
      propready --config /etc/propready/propready.toml run --once
      curl -s http://127.0.0.1:9464/healthz
    """
    settings = settings_from(ctx, logs_to_stdout=True)
    _require_migrated(settings)
    if once:
        with components(settings) as parts:
            log.info("starting", mode=settings.orders.mode, rules_version=parts.rules.version)
            summary = run_cycle(parts, utc_now, respect_backoff=False)
        if summary.source_error:
            raise click.ClickException(summary.source_error)
        return
    # Imported here: the scheduler and metrics stack is only needed by the daemon itself.
    from propready.runtime.daemon import Daemon
    from propready.runtime.metrics import DaemonMetrics

    metrics = DaemonMetrics()
    config_path = resolve_config_path(ctx.find_root().obj.get("config_path"))
    with components(settings, vendor_observer=metrics.vendor_call) as parts:
        daemon = Daemon(parts, config_path=config_path, clock=utc_now, metrics=metrics)
        try:
            code = daemon.run()
        except OSError as exc:  # the metrics address is taken or not ours to bind
            raise click.ClickException(exc.strerror or str(exc)) from None
    if code:
        sys.exit(code)


@click.command("check")
@click.pass_context
def check_command(ctx: click.Context) -> None:
    """Check config, rule files, both databases, the orders ready now and the vendor; exit 1
    on any FAIL.

    The orders line builds the PlanOmatic order for every home whose trigger is true now and
    validates it as PlanOmatic would; each reason is listed with a few property ids. The vendor
    line retrieves an order id that cannot exist: the key and the URL are tested in every mode,
    dry_run included.

    \b
    Example:
      propready --config /etc/propready/propready.toml check
    """
    settings = settings_from(ctx)
    with row_progress("reading homes") as advance:
        lines = run_checks(settings, utc_now(), on_row=advance)
    for line in lines:
        for text in line.render():
            click.echo(text)
    if any(line.failed for line in lines):
        sys.exit(1)
