"""`propready run` and `propready check`."""

from __future__ import annotations

import sys

import click
import httpx
import sqlalchemy as sa
import structlog

from propready.adapters.planomatic import RETRIEVE_PATH
from propready.adapters.rule_reloader import pending_refusals
from propready.adapters.rulefiles import RuleFileError, load_rule_set
from propready.adapters.source import create_source_engine
from propready.adapters.store import migrate, properties
from propready.adapters.store.engine import create_state_engine
from propready.cli.context import settings_from
from propready.service import run_cycle
from propready.settings import Settings, resolve_config_path
from propready.wiring import catalog_for, components, utc_now

log = structlog.get_logger("propready.run")


def _require_migrated(settings: Settings) -> None:
    engine = create_state_engine(settings.state.url)
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
            raise click.ClickException(str(exc)) from None
    if code:
        sys.exit(code)


@click.command("check")
@click.pass_context
def check_command(ctx: click.Context) -> None:
    """Check config, rule files, both databases, migrations and the vendor; exit 1 on failure.

    \b
    Example:
      propready --config /etc/propready/propready.toml check
    """
    settings = settings_from(ctx)
    results: list[tuple[str, bool, str]] = [("config", True, "loaded and valid")]
    try:
        rules = load_rule_set(settings.rules.path, catalog_for(settings))
        results.append(("rules", True, f"{len(rules.rules)} rules, version {rules.version}"))
        results.extend(("budget", True, f"{b.name}: {b.describe()}") for b in rules.budgets)
    except RuleFileError as exc:
        results.append(
            ("rules", False, f"{len(exc.problems)} problem(s); first: {exc.problems[0]}")
        )
    results.extend(("reload", False, line) for line in pending_refusals(settings.state.url))
    results.append(_check_state(settings))
    results.extend(_check_polls(settings))
    results.append(_check_source(settings))
    results.append(_check_vendor(settings))
    for name, ok, detail in results:
        click.echo(f"{'PASS' if ok else 'FAIL'}  {name:<8} {detail}")
    if not all(ok for _, ok, _ in results):
        sys.exit(1)


def _check_polls(settings: Settings) -> list[tuple[str, bool, str]]:
    """The daemon's own record of its last polls: failing ones are reported, with the error."""
    engine = create_state_engine(settings.state.url)
    try:
        with engine.connect() as connection:
            checkpoint = properties.load_checkpoint(connection, "source")
    except sa.exc.SQLAlchemyError:
        return []  # the state line already says what is wrong with the database
    finally:
        engine.dispose()
    failures = int(checkpoint.get("consecutive_failures") or 0)
    if failures:
        return [
            ("polls", False, f"{failures} failed in a row; last: {checkpoint.get('last_error')}")
        ]
    last = checkpoint.get("last_success_at")
    return [("polls", True, f"last successful poll {last.isoformat() if last else 'never'}")]


def _check_state(settings: Settings) -> tuple[str, bool, str]:
    engine = create_state_engine(settings.state.url)
    try:
        current = migrate.current_revision(engine)
        head = migrate.head_revision()
        if current != head:
            return (
                "state",
                False,
                f"schema at {current or 'nothing'}, head is {head}: run `propready db upgrade`",
            )
        return ("state", True, f"reachable, schema at head {head}")
    except sa.exc.SQLAlchemyError as exc:
        return ("state", False, f"unreachable: {type(exc).__name__}")
    finally:
        engine.dispose()


def _check_source(settings: Settings) -> tuple[str, bool, str]:
    engine = create_source_engine(settings.source.url)
    try:
        with engine.connect() as connection:
            query = f"SELECT * FROM ({settings.source.query}) AS source_check LIMIT 1"
            columns = list(connection.execute(sa.text(query)).keys())
        if "external_property_id" not in columns:
            return ("source", False, "the query returns no external_property_id column")
        return ("source", True, f"reachable, query returns {len(columns)} columns")
    except sa.exc.SQLAlchemyError as exc:
        return ("source", False, f"query failed: {type(exc).__name__}")
    finally:
        engine.dispose()


def _check_vendor(settings: Settings) -> tuple[str, bool, str]:
    if settings.orders.mode == "dry_run":
        return ("vendor", True, "dry_run mode: nothing is sent")
    # A retrieve of an order id that cannot exist: harmless, and a JSON answer proves the API
    # is there and shows whether the key is accepted.
    body = {"api_key": settings.planomatic.api_key.get_secret_value(), "order_id": 0}
    try:
        with httpx.Client(
            base_url=settings.planomatic.base_url, timeout=10, trust_env=False
        ) as client:
            response = client.post(RETRIEVE_PATH, json=body)
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return (
            "vendor",
            False,
            f"{settings.planomatic.base_url} unreachable: {type(exc).__name__}",
        )
    attrs = {
        (e.get("attr"), e.get("message")) for e in data.get("errors", []) if isinstance(e, dict)
    }
    if ("api_key", "unauthorized") in attrs or ("api_key", "missing") in attrs:
        return ("vendor", False, "reachable, but the api key is not accepted")
    return ("vendor", True, f"{settings.planomatic.base_url} answers (HTTP {response.status_code})")
