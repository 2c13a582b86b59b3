"""`propready run` and `propready check`."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click
import httpx
import sqlalchemy as sa
import structlog

from propready.adapters.planomatic import RETRIEVE_PATH
from propready.adapters.rule_reloader import RuleReloader, pending_refusals
from propready.adapters.rulefiles import RuleFileError, load_rule_set
from propready.adapters.source import create_source_engine
from propready.adapters.store import migrate, properties
from propready.adapters.store.engine import create_state_engine
from propready.cli.context import settings_from
from propready.service import run_cycle
from propready.settings import Settings
from propready.wiring import catalog_for, components, utc_now

log = structlog.get_logger("propready.run")
RULES_WATCH_SECONDS = 2  # how often the daemon looks for changed rule files


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

    With --once, run one cycle and exit (cron, trials, the demo).

    \b
    Example:
      propready --config /etc/propready/propready.toml run --once
    """
    settings = settings_from(ctx, logs_to_stdout=True)
    _require_migrated(settings)
    with components(settings) as parts:
        log.info("starting", mode=settings.orders.mode, rules_version=parts.rules.version)
        if once:
            summary = run_cycle(parts, utc_now, respect_backoff=False)
            if summary.source_error:
                raise click.ClickException(summary.source_error)
            return
        from apscheduler.schedulers.blocking import BlockingScheduler

        scheduler = BlockingScheduler(
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": settings.source.poll_interval_seconds,
            }
        )
        # Hot reload of the rule files (issue 4): cycles run under the reloader's lock, so a
        # new rule set is swapped in between cycles, never during one.
        reloader = RuleReloader(parts, utc_now)
        reloader.record_startup()
        scheduler.add_job(
            reloader.run_guarded,
            "interval",
            args=(run_cycle, parts, utc_now),
            seconds=settings.source.poll_interval_seconds,
            next_run_time=utc_now(),
            id="cycle",
        )
        scheduler.add_job(
            reloader.check_files, "interval", seconds=RULES_WATCH_SECONDS, id="rules_watch"
        )

        def _reload(_signum: int, _frame: FrameType | None) -> None:
            log.info("reload_requested", signal="SIGHUP")
            scheduler.add_job(
                reloader.reload, args=("SIGHUP",), id="rules_reload", replace_existing=True
            )

        def _stop(signum: int, _frame: FrameType | None) -> None:
            log.info("stopping", signal=signal.Signals(signum).name)
            scheduler.shutdown(wait=False)

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGHUP, _reload)
        scheduler.start()
        log.info("stopped")


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
