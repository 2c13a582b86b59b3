"""The composition root: the one place that turns settings into real adapters."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from propready.adapters.catalog_file import load_catalog
from propready.adapters.database_urls import open_engine
from propready.adapters.planomatic import PlanomaticClient
from propready.adapters.rulefiles import load_rule_set
from propready.adapters.source import create_source_engine
from propready.adapters.store import audit
from propready.adapters.store.engine import create_state_engine
from propready.core.budgets import Budget
from propready.core.catalog import Catalog
from propready.core.rules import RuleSet
from propready.receiver.app import create_webhook_app
from propready.receiver.metrics import ServeMetrics
from propready.receiver.server import Listener
from propready.receiver.store_queue import StoreQueue
from propready.receiver.tokens import TokenChecker
from propready.service import Components, Pacer
from propready.service.reorder import Reordered, reorder
from propready.service.rules_reload import load_catalog_or_refuse, load_checked_rules
from propready.service.webhook_intake import intake_for, state_reachable
from propready.settings import Settings

if TYPE_CHECKING:  # the console (Jinja2, argon2) is imported only by `serve` with [console]
    from propready.console.deps import ConsoleDeps, ReorderRequest


def utc_now() -> datetime:
    """The clock, read at the edge and passed down."""
    return datetime.now(UTC)


def catalog_for(settings: Settings) -> Catalog:
    return load_catalog(settings.rules.catalog_path)


def state_engine(settings: Settings, *, connect: bool = True) -> sa.Engine:
    """The state database, connected once to prove it is there; DatabaseSettingError if not."""
    return open_engine("state.url", settings.state.url, create_state_engine, connect=connect)


def source_engine(settings: Settings, *, connect: bool = False) -> sa.Engine:
    """The PM database. Not connected by default: an outage there is the poll's business
    (backoff, `source_unavailable`), but a URL that can never work is refused at once."""
    return open_engine("source.url", settings.source.url, create_source_engine, connect=connect)


def instance_name(settings: Settings) -> str:
    """This daemon's name in leases, logs and audit rows: `[daemon] instance_name` or the host."""
    return settings.daemon.instance_name or socket.gethostname()


@contextmanager
def components(
    settings: Settings, *, vendor_observer: Callable[[str, str], None] | None = None
) -> Iterator[Components]:
    """Real adapters for one process; engines and the HTTP client are closed on exit."""
    state = state_engine(settings)
    try:
        source = source_engine(settings)
    except BaseException:
        state.dispose()
        raise
    try:  # rules are checked against the source query's field names before anything runs
        rules, catalog = load_checked_rules(settings, source)
    except BaseException:
        state.dispose()
        source.dispose()
        raise
    instance = instance_name(settings)
    audit.identify_host(instance)
    stop_requested = threading.Event()
    client = None
    if settings.orders.mode != "dry_run":
        client = vendor_client(settings, vendor_observer)
    parts = Components(
        settings=settings,
        state=state,
        source=source,
        rules=rules,
        catalog=catalog,
        client=client,
        owner=f"{instance}:{os.getpid()}",
        pacer=pacer_for(settings, stop_requested),
        sync_pacer=sync_pacer_for(settings, stop_requested),
        stop_requested=stop_requested,
    )
    try:
        yield parts
    finally:
        if parts.client is not None:
            parts.client.close()
        state.dispose()
        source.dispose()


def vendor_client(
    settings: Settings, observer: Callable[[str, str], None] | None = None
) -> PlanomaticClient:
    return PlanomaticClient(
        settings.planomatic.base_url,
        settings.planomatic.api_key.get_secret_value(),
        timeout_seconds=settings.planomatic.timeout_seconds,
        observer=observer,
    )


def pacer_for(settings: Settings, stop_requested: threading.Event) -> Pacer:
    """The send pacer; its waits end early when the daemon is asked to stop."""

    def sleep(seconds: float) -> None:
        stop_requested.wait(seconds)

    return Pacer(settings.planomatic.requests_per_minute, sleep)


def sync_pacer_for(settings: Settings, stop_requested: threading.Event) -> Pacer:
    """Reconciliation retrieves' own schedule: at most [planomatic] sync_share of the limit."""

    def sleep(seconds: float) -> None:
        stop_requested.wait(seconds)

    planomatic = settings.planomatic
    return Pacer(
        planomatic.requests_per_minute,
        sleep,
        headroom=0.98 * planomatic.sync_share,
        name="planomatic_reconcile",
    )


# --- propready serve -----------------------------------------------------------------------------


def serve_state_engine(settings: Settings) -> sa.Engine:
    """The state database for `serve`: each delivery is one short insert and commit.

    SQLite takes one writer at a time (BEGIN IMMEDIATE), so one pooled connection queues the
    request threads in the pool instead of in SQLite's busy-wait; PostgreSQL commits in
    parallel, so the pool matches the request threads that may commit at once.
    """
    size = serve_store_concurrency(settings)

    def factory(url: str) -> sa.Engine:
        return create_state_engine(
            url,
            pool_size=size,
            max_overflow=0,
            pool_timeout=30,
            # store_delivery retries once on a connection that died instead (cheaper per delivery)
            pool_pre_ping=False,
        )

    return open_engine("state.url", settings.state.url, factory)


def serve_store_concurrency(settings: Settings) -> int:
    """Writer threads (and pooled connections): one on SQLite, which takes one writer at a
    time, a few on PostgreSQL. Each stores what waits in one transaction."""
    try:
        backend = sa.make_url(settings.state.url).get_backend_name()
    except sa.exc.ArgumentError:
        return 1  # not a URL: open_engine says so, naming state.url
    return 1 if backend == "sqlite" else SERVE_PG_WRITERS


SERVE_PG_WRITERS = 4


def webhook_listener(
    listen: str, state: sa.Engine, tokens: TokenChecker, metrics: ServeMetrics, writers: int
) -> Listener:
    """The webhook listener on `listen`, storing into `state` with `writers` writer threads."""
    store_queue = StoreQueue(intake_for(state, utc_now), writers=writers)
    app = create_webhook_app(
        store=store_queue.store,
        tokens=tokens,
        metrics=metrics,
        health_check=lambda: state_reachable(state),
    )
    return Listener("webhooks", "webhooks.listen", listen, app, close=store_queue.close)


def serve_listeners(settings: Settings, state: sa.Engine, metrics: ServeMetrics) -> list[Listener]:
    """The listeners `propready serve` starts: only those configured (design.md 8.5)."""
    listeners = []
    if settings.webhooks.listen:
        tokens = TokenChecker(settings.webhooks.valid_tokens())
        writers = serve_store_concurrency(settings)
        listen = settings.webhooks.listen
        listeners.append(webhook_listener(listen, state, tokens, metrics, writers))
    if settings.console.listen:
        listeners.append(console_listener(settings))
    return listeners


# --- the web console ([console], served by `propready serve`) ---------------------------------

COMPARE_KEEP = 500  # changed homes listed on the rules page; `simulate --rules` lists them all
COMPARE_SECONDS = 30.0  # reading the source for one comparison from the console, at most


def console_deps(settings: Settings, state: sa.Engine) -> ConsoleDeps:
    """The console's real collaborators: the same service functions the CLI calls."""
    from propready.adapters.rulefiles import parse_rule_files
    from propready.adapters.source import query_columns
    from propready.adapters.store.deliverables import deliverables_for
    from propready.console.deps import ConsoleDeps
    from propready.service.rules_diff import RulesDiff, compare_homes, rules_diff

    @contextmanager
    def vendor() -> Iterator[PlanomaticClient | None]:
        client = None if settings.orders.mode == "dry_run" else vendor_client(settings)
        try:
            yield client
        finally:
            if client is not None:
                client.close()

    def rules() -> tuple[RuleSet, Catalog]:
        catalog = load_catalog_or_refuse(settings.rules.catalog_path)
        return load_rule_set(settings.rules.path, catalog), catalog

    def budgets() -> tuple[Budget, ...]:
        return rules()[0].budgets

    def compare_rules(sources: Sequence[tuple[str, str]]) -> RulesDiff:
        """Uploaded candidate rule files against the live ones (`simulate --rules`), bounded for
        a page: the first COMPARE_KEEP changed homes, at most COMPARE_SECONDS of reading."""
        source = source_engine(settings, connect=True)
        try:
            live, catalog = rules()
            fields = frozenset(query_columns(source, settings.source.query))
            candidate = parse_rule_files(sources, catalog, fields)
            compared = compare_homes(settings, source, live, catalog, candidate, utc_now())
            return rules_diff(
                compared,
                (live.version, candidate.version),
                keep=COMPARE_KEEP,
                time_limit=COMPARE_SECONDS,
            )
        finally:
            source.dispose()

    def reorder_home(request: ReorderRequest) -> Reordered:
        with components(settings) as parts:
            return reorder(
                parts,
                request.external_property_id,
                reason=request.reason,
                by=request.by,
                now=utc_now(),
                ignore_window=request.ignore_window,
            )

    return ConsoleDeps(
        settings=settings,
        state=state,
        now=utc_now,
        vendor=vendor,
        budgets=budgets,
        rules=rules,
        reorder=reorder_home,
        deliverables=deliverables_for,  # the links and photos the vendor's news delivered
        compare_rules=compare_rules,
    )


def console_listener(settings: Settings) -> Listener:
    """The console on [console] listen, with a state engine of its own (pages read while the
    webhook listener's single SQLite writer works)."""
    from propready.console.app import create_console_app

    state = state_engine(settings, connect=False)
    app = create_console_app(console_deps(settings, state))
    return Listener(
        "console",
        "console.listen",
        settings.console.listen,
        app,
        close=state.dispose,
        proxy_headers=False,
    )
