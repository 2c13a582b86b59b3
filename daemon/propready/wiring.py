"""The composition root: the one place that turns settings into real adapters."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from propready.adapters.catalog_file import load_catalog
from propready.adapters.planomatic import PlanomaticClient
from propready.adapters.rule_reloader import load_checked_rules
from propready.adapters.source import create_source_engine
from propready.adapters.store.engine import create_state_engine
from propready.core.catalog import Catalog
from propready.service import Components, Pacer
from propready.settings import Settings


def utc_now() -> datetime:
    """The clock, read at the edge and passed down."""
    return datetime.now(UTC)


def catalog_for(settings: Settings) -> Catalog:
    return load_catalog(settings.rules.catalog_path)


@contextmanager
def components(settings: Settings) -> Iterator[Components]:
    """Real adapters for one process; engines and the HTTP client are closed on exit."""
    state = create_state_engine(settings.state.url)
    source = create_source_engine(settings.source.url)
    try:  # rules are checked against the source query's field names before anything runs
        rules, catalog = load_checked_rules(settings, source)
    except BaseException:
        state.dispose()
        source.dispose()
        raise
    client = None
    if settings.orders.mode != "dry_run":
        client = PlanomaticClient(
            settings.planomatic.base_url,
            settings.planomatic.api_key.get_secret_value(),
            timeout_seconds=settings.planomatic.timeout_seconds,
        )
    try:
        yield Components(
            settings=settings,
            state=state,
            source=source,
            rules=rules,
            catalog=catalog,
            client=client,
            owner=f"{socket.gethostname()}:{os.getpid()}",
            pacer=Pacer(settings.planomatic.requests_per_minute),
        )
    finally:
        if client is not None:
            client.close()
        state.dispose()
        source.dispose()
