"""Source outages of every kind take one path: the poll fails in one line, backs off, audits the
outage once, and recovers with nothing lost (the PM database behind a proxy cut on the wire)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, properties
from propready.service import Components, run_cycle
from propready.settings import Settings
from tests.integration.cycle_support import Clock, PmDatabase, home, make_settings, wired
from tests.integration.tcp_proxy import CuttableProxy

HOMES = 3000


@pytest.fixture
def pm_behind_proxy(pg_database: str) -> Iterator[tuple[PmDatabase, CuttableProxy, str]]:
    """3,000 homes in PostgreSQL, reachable through a proxy the test can cut."""
    direct = pg_database.replace("postgresql://", "postgresql+psycopg://")
    pm = PmDatabase(direct)
    pm.insert(*[home(f"H{n:05d}") for n in range(HOMES)])
    host_port = direct.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    database = direct.rsplit("/", 1)[1]
    with CuttableProxy((host, int(port))) as proxy:
        yield pm, proxy, proxy.url(database)
    pm.close()


def _settings(state_url: str, pm_url: str, sandbox: SandboxServer) -> Settings:
    settings = make_settings(state_url, pm_url, sandbox.url)
    source = settings.source.model_copy(update={"batch_size": 200})
    return settings.model_copy(update={"source": source})


def _kinds(parts: Components, *kinds: str) -> list[dict[str, Any]]:
    with parts.state.connect() as connection:
        return audit.query_events(connection, kinds=list(kinds))


def _homes_known(parts: Components) -> int:
    with parts.state.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM property_state")).scalar_one())


def test_a_connection_cut_mid_poll_backs_off_and_recovers_without_loss(
    state_url: str, pm_behind_proxy: tuple[PmDatabase, CuttableProxy, str], sandbox: SandboxServer
) -> None:
    """Cut in the middle of a poll, then refused: one outage audited, backoff, then every home."""
    _pm, proxy, url = pm_behind_proxy
    clock = Clock()
    with wired(_settings(state_url, url, sandbox)) as parts:
        proxy.cut_after(60_000)  # a few batches come through, then the line drops
        cut = run_cycle(parts, clock)
        assert cut.source_error is not None
        assert "\n" not in cut.source_error
        assert cut.source_error.startswith("source query failed")
        assert 0 < _homes_known(parts) < HOMES  # what was read before the cut is kept
        clock.now += timedelta(seconds=10)
        waiting = run_cycle(parts, clock)
        assert waiting.source_error == "waiting out the backoff after earlier source failures"
        proxy.down()
        clock.now += timedelta(hours=1)
        refused = run_cycle(parts, clock)
        assert refused.source_error is not None
        with parts.state.connect() as connection:
            assert properties.load_checkpoint(connection, "source").consecutive_failures == 2
        assert len(_kinds(parts, "source_unavailable")) == 1  # one outage, audited once
        proxy.up()
        clock.now += timedelta(hours=1)
        recovered = run_cycle(parts, clock)
        assert recovered.source_error is None
        assert _homes_known(parts) == HOMES
        (back,) = _kinds(parts, "source_recovered")
        assert back["detail"]["failed_polls"] == 2
        with parts.state.connect() as connection:
            assert properties.load_checkpoint(connection, "source").consecutive_failures == 0


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        ("refused", "source query failed: OperationalError"),
        ("dns", "source query failed: OperationalError"),
        ("authentication", 'role "no_such_role" does not exist'),
        ("query", 'relation "homes_gone" does not exist'),
    ],
)
def test_every_kind_of_outage_takes_the_outage_path(
    mistake: str,
    expected: str,
    state_url: str,
    pm_behind_proxy: tuple[PmDatabase, CuttableProxy, str],
    sandbox: SandboxServer,
) -> None:
    """Refused, DNS, authentication or query error: one line with the driver's words, one
    audited outage, the failure counted for backoff and health; the daemon goes on."""
    _pm, proxy, url = pm_behind_proxy
    settings = _settings(state_url, url, sandbox)
    source = settings.source
    if mistake == "refused":
        proxy.down()
    elif mistake == "dns":
        source = source.model_copy(update={"url": url.replace("127.0.0.1", "no-such-host.invalid")})
    elif mistake == "authentication":
        source = source.model_copy(update={"url": url.replace("root@", "no_such_role@")})
    else:
        source = source.model_copy(update={"query": source.query.replace("homes", "homes_gone")})
    settings = settings.model_copy(update={"source": source})
    with wired(settings) as parts:
        summary = run_cycle(parts, Clock())
        (outage,) = _kinds(parts, "source_unavailable")
        with parts.state.connect() as connection:
            checkpoint = properties.load_checkpoint(connection, "source")
    assert summary.source_error is not None
    assert "\n" not in summary.source_error
    assert expected in summary.source_error
    assert outage["detail"]["error"] == summary.source_error
    assert checkpoint.consecutive_failures == 1
