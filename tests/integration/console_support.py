"""Helpers for the console's tests: settings, orders waiting for approval, a served console."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import outbox
from propready.adapters.store.engine import create_state_engine
from propready.console.app import Console
from propready.console.deps import ConsoleDeps
from propready.receiver.server import Listener, ReceiverServer
from propready.service import run_cycle
from propready.service.console_users import add_user
from propready.settings import Settings
from propready.wiring import console_deps
from tests.integration.cycle_support import API_KEY, QUERY, REPO, Clock, PmDatabase, wired

SESSION_SECRET = "console-session-secret-for-tests-0123456789"
PASSWORDS = {
    "alice": "alice-approves-1",
    "vera": "vera-only-views-1",
    "adam": "adam-administers-1",
}
ROLES = {"alice": "approver", "vera": "viewer", "adam": "admin"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_settings(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, **console: Any
) -> Settings:
    return Settings(
        state={"url": state_url},
        source={"url": pm.url, "query": QUERY, "timezone": "America/Denver", "batch_size": 7},
        rules={"path": REPO / "rules"},
        orders={"mode": "approval"},
        planomatic={"base_url": sandbox.url, "api_key": API_KEY, "requests_per_minute": 6000},
        console={
            "listen": "127.0.0.1:0",
            "session_secret": SESSION_SECRET,
            **console,
        },
    )


def orders_awaiting_approval(settings: Settings, pm: PmDatabase, clock: Clock) -> dict[str, str]:
    """H1 and H2 become ready in approval mode: two orders wait. {home: external_order_id}"""
    with wired(settings) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        pm.set("H2", status="Vacant Unrented Ready")
        clock.now += timedelta(minutes=5)
        run_cycle(parts, clock)
        with parts.state.connect() as connection:
            rows = outbox.list_orders(connection)
    return {row.external_property_id: row.external_order_id for row in rows}


def add_users(state: sa.Engine, clock: Clock, *names: str) -> None:
    for name in names or tuple(PASSWORDS):
        add_user(state, name, ROLES[name], PASSWORDS[name], by="test", now=clock())


@dataclass
class Served:
    url: str
    state: sa.Engine
    console: Console

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30, **kwargs)


@contextmanager
def serve_console(settings: Settings, **overrides: Any) -> Iterator[Served]:
    """The real console app (the composition root's collaborators, with `overrides`) on a
    loopback port, served by uvicorn like `propready serve` does."""
    state = create_state_engine(settings.state.url)
    deps: ConsoleDeps = replace(console_deps(settings, state), **overrides)
    console = Console(deps)
    listener = Listener(
        "console", "console.listen", "127.0.0.1:0", console.app(), proxy_headers=False
    )
    try:
        with ReceiverServer([listener]) as server:
            yield Served(server.urls()["console"], state, console)
    finally:
        state.dispose()


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, page.text[:500]
    return found.group(1)


def log_in(client: httpx.Client, name: str, password: str | None = None) -> httpx.Response:
    token = csrf_of(client.get("/login"))
    return client.post(
        "/login",
        data={
            "csrf_token": token,
            "name": name,
            "password": PASSWORDS[name] if password is None else password,
            "next": "/",
        },
    )
