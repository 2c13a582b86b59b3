"""The web console over real HTTP (uvicorn on loopback), on SQLite and PostgreSQL state.

Logins, lockout, roles, CSRF refusals, every page, actions audited with the user's name,
masking of access codes and secrets, security headers, proxy authentication only from trusted
proxies, and sessions that end when a password changes.
"""

from __future__ import annotations

import csv
import io
import secrets
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import audit, deliverables, outbox
from propready.adapters.store.audit_views import read_view
from propready.adapters.store.console_secrets import SESSION_KEY, stored_secret
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.reachability import StateUnavailable
from propready.adapters.store.schema import console_secret, orders
from propready.console.app import Console
from propready.core.pricing import usd
from propready.service import run_cycle
from propready.service.console_users import remove_user, set_disabled, set_password
from propready.settings import ConfigError, load_settings
from propready.wiring import console_deps
from tests.integration.console_support import (
    PASSWORDS,
    SESSION_SECRET,
    add_users,
    console_settings,
    csrf_of,
    log_in,
    orders_awaiting_approval,
    serve_console,
)
from tests.integration.cycle_support import (
    API_KEY,
    REPO,
    SECRET_CODE,
    Clock,
    PmDatabase,
    wired,
)


@dataclass(frozen=True)
class Photo:
    kind: str
    name: str
    url: str
    sequence: int | None
    caption: str | None


def order_state(state: sa.Engine, external_order_id: str) -> str:
    with state.connect() as connection:
        order = outbox.find_by_external_order_id(connection, external_order_id)
    assert order is not None
    return order.state.value


def audit_rows(state: sa.Engine, kind: str) -> list[dict[str, Any]]:
    with state.connect() as connection:
        return audit.query_events(connection, kinds=[kind])


def test_login_sets_a_hardened_session_and_every_page_has_the_security_headers(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        first = client.get("/")
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=%2F"
        login_page = client.get("/login")
        assert login_page.status_code == 200
        for name, value in (
            ("content-security-policy", "default-src 'self'"),
            ("content-security-policy", "frame-ancestors 'none'"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
        ):
            assert value in login_page.headers[name]
        assert '<meta name="viewport"' in login_page.text

        wrong = log_in(client, "alice", "not-her-password")
        assert wrong.status_code == 401
        assert "Wrong name or password" in wrong.text
        unknown = log_in(client, "mallory", "whatever-it-is")
        assert unknown.status_code == 401

        good = log_in(client, "alice")
        assert good.status_code == 303
        assert good.headers["location"] == "/"
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
        assert "Secure" not in cookie  # plain http on loopback works (design.md 8.5)
        start = client.get("/")
        assert start.status_code == 200
        assert "alice (approver)" in start.text
        assert "frame-ancestors 'none'" in start.headers["content-security-policy"]

        failed = audit_rows(served.state, "console_login_failed")
        assert [row["detail"]["user"] for row in failed] == ["alice", "mallory"]
        assert all("not-her-password" not in str(row) for row in failed)
        assert [row["detail"]["user"] for row in audit_rows(served.state, "console_login")] == [
            "alice"
        ]

        token = csrf_of(start)
        copied = client.cookies.get("propready_console")
        out = client.post("/logout", data={"csrf_token": token})
        assert out.status_code == 303
        assert client.get("/").status_code == 303
        assert len(audit_rows(served.state, "console_logout")) == 1
        with served.client() as thief:  # a copy of the cookie taken before the logout
            thief.cookies.set("propready_console", str(copied))
            assert thief.get("/").status_code == 303

        # After logging in, only a path on this site is followed.
        token = csrf_of(client.get("/login"))
        away = client.post(
            "/login",
            data={
                "csrf_token": token,
                "name": "alice",
                "password": PASSWORDS["alice"],
                "next": "//evil.example.com/",
            },
        )
        assert away.status_code == 303
        assert away.headers["location"] == "/"


def test_the_secure_flag_follows_https_from_a_trusted_proxy_only(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    trusted = console_settings(state_url, pm, sandbox, trusted_proxies=["127.0.0.1"])
    with serve_console(trusted, now=clock) as served, served.client() as client:
        page = client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in page.headers["set-cookie"]
    untrusted = console_settings(state_url, pm, sandbox, trusted_proxies=["10.0.0.9"])
    with serve_console(untrusted, now=clock) as served, served.client() as client:
        page = client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" not in page.headers["set-cookie"]


def test_failed_logins_lock_the_name_for_the_lockout_time(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(
        state_url, pm, sandbox, login_max_failures=3, login_lockout_minutes=10
    )
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        for _ in range(3):
            assert log_in(client, "alice", "guessing-wrong-1").status_code == 401
        locked = log_in(client, "alice")  # the right password, but locked
        assert locked.status_code == 429
        assert "Too many failed logins" in locked.text
        assert client.get("/").status_code == 303
        reasons = [
            r["detail"].get("reason") for r in audit_rows(served.state, "console_login_failed")
        ]
        assert reasons[-1] == "locked"
        clock.now += timedelta(minutes=11)
        assert log_in(client, "alice").status_code == 303
        assert client.get("/").status_code == 200


def test_forms_without_the_csrf_token_are_refused(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        client.get("/login")
        no_token = client.post("/login", data={"name": "alice", "password": PASSWORDS["alice"]})
        assert no_token.status_code == 403
        assert log_in(client, "alice").status_code == 303
        order = ids["H1"]
        assert client.post(f"/orders/{order}/approve", data={}).status_code == 403
        forged = client.post(f"/orders/{order}/approve", data={"csrf_token": "forged"})
        assert forged.status_code == 403
        other = httpx.Client(base_url=served.url)  # another visitor's token is not this one's
        other_token = csrf_of(other.get("/login"))
        other.close()
        assert (
            client.post(f"/orders/{order}/approve", data={"csrf_token": other_token}).status_code
            == 403
        )
        assert order_state(served.state, order) == "awaiting_approval"
        assert audit_rows(served.state, "order_approved") == []


def test_viewers_read_but_cannot_act_and_only_admins_see_users(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    with serve_console(settings, now=clock) as served:
        add_users(served.state, clock)
        with served.client() as viewer:
            assert log_in(viewer, "vera").status_code == 303
            page = viewer.get(f"/orders/{ids['H1']}")
            assert page.status_code == 200
            assert "awaiting_approval" in page.text
            assert ">Approve<" not in page.text
            assert "/approve" not in page.text
            token = csrf_of(page)
            forged = viewer.post(f"/orders/{ids['H1']}/approve", data={"csrf_token": token})
            assert forged.status_code == 403
            ack = viewer.post(
                "/attention/ack",
                data={"csrf_token": token, "item": f"approval:{ids['H1']}", "reason": "x"},
            )
            assert ack.status_code == 403
            assert viewer.get("/users").status_code == 403
            assert order_state(served.state, ids["H1"]) == "awaiting_approval"
        with served.client() as approver:
            assert log_in(approver, "alice").status_code == 303
            assert ">Approve<" in approver.get(f"/orders/{ids['H1']}").text
            assert approver.get("/users").status_code == 403
        with served.client() as admin:
            assert log_in(admin, "adam").status_code == 303
            users = admin.get("/users")
            assert users.status_code == 200
            assert "vera" in users.text
            assert "$argon2" not in users.text


def test_actions_go_through_the_services_and_are_audited_with_the_user(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        assert log_in(client, "alice").status_code == 303
        start = client.get("/")
        assert f"approval:{ids['H1']}" in start.text
        token = csrf_of(start)

        approved = client.post(f"/orders/{ids['H1']}/approve", data={"csrf_token": token})
        assert approved.status_code == 303
        assert order_state(served.state, ids["H1"]) == "planned"
        assert "Approved" in client.get(approved.headers["location"]).text
        [row] = audit_rows(served.state, "order_approved")
        assert row["detail"]["approved_by"] == "alice"

        again = client.post(f"/orders/{ids['H1']}/approve", data={"csrf_token": token})
        assert again.status_code == 409
        assert "not awaiting_approval" in again.text

        with wired(settings) as parts:  # the next send cycle places it
            run_cycle(parts, clock)
        assert order_state(served.state, ids["H1"]) == "placed"
        with served.state.connect() as connection:
            [line] = read_view(connection, "audit_spend_by_entity_month")
        spend = client.get("/spend")
        assert spend.status_code == 200
        row = f"<td>{line['billing_entity_slug']}</td><td>{line['month']}</td><td>1</td>"
        assert row in spend.text
        assert usd(int(line["spend_cents"])) in spend.text
        assert "<svg" in spend.text

        canceled = client.post(
            f"/orders/{ids['H2']}/cancel",
            data={
                "csrf_token": token,
                "reason": "client_requested_cancelation",
                "notes": "home sold",
            },
        )
        assert canceled.status_code == 303
        assert order_state(served.state, ids["H2"]) == "canceled"
        [row] = audit_rows(served.state, "order_canceled")
        assert row["detail"]["canceled_by"] == "alice"
        assert row["detail"]["notes"] == "home sold"

        refused = client.post(
            "/orders/no-such-order/cancel",
            data={"csrf_token": token, "reason": "duplicate_order", "notes": "x"},
        )
        assert refused.status_code == 404


def test_attention_items_are_acknowledged_and_snoozed_with_the_user(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        assert log_in(client, "alice").status_code == 303
        token = csrf_of(client.get("/"))
        acked = client.post(
            "/attention/ack",
            data={"csrf_token": token, "item": f"approval:{ids['H1']}", "reason": "asked finance"},
        )
        assert acked.status_code == 303
        snoozed = client.post(
            "/attention/snooze",
            data={
                "csrf_token": token,
                "item": f"approval:{ids['H2']}",
                "for": "2d",
                "reason": "owner away",
            },
        )
        assert snoozed.status_code == 303
        page = client.get("/")
        assert f"approval:{ids['H1']}" not in page.text
        assert f"approval:{ids['H2']}" not in page.text
        [ack] = audit_rows(served.state, "attention_acknowledged")
        assert ack["detail"]["by"] == "alice"
        [snooze] = audit_rows(served.state, "attention_snoozed")
        assert snooze["detail"]["by"] == "alice"
        bad = client.post(
            "/attention/snooze",
            data={"csrf_token": token, "item": "approval:nope", "for": "2d", "reason": "x"},
        )
        assert bad.status_code == 409


def test_every_page_renders_without_secrets_and_access_codes_are_masked(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    photos = [
        Photo("photo", "front.jpg", "https://cdn.example.com/p/1.jpg", 1, "Front of the house"),
        Photo("link", "photo_manage_link", "https://portal.example.com/orders/1", None, None),
        Photo("link", "odd_link", "javascript:alert(1)", None, "<script>alert(2)</script>"),
    ]
    with (
        serve_console(settings, now=clock, deliverables=lambda c, order_id: photos) as served,
        served.client() as client,
    ):
        add_users(served.state, clock, "adam")
        assert log_in(client, "adam").status_code == 303
        pages = [
            "/",
            "/orders",
            "/orders?state=awaiting_approval",
            "/orders?entity=investment_entity_1&since=2026-11-01&until=2026-12-31",
            f"/orders/{ids['H1']}",
            "/homes/H1",
            "/spend",
            "/rules",
            "/audit",
            "/audit?kind=order_created&property=H1",
            "/users",
            "/static/console.css",
        ]
        for path in pages:
            page = client.get(path)
            assert page.status_code == 200, (path, page.text[:300])
            for secret in (SECRET_CODE, API_KEY, SESSION_SECRET, "$argon2"):
                assert secret not in page.text, (path, secret)
        order_page = client.get(f"/orders/{ids['H1']}").text
        assert "&#34;access_code&#34;: &#34;***&#34;" in order_page or '"access_code": "***"' in (
            order_page.replace("&#34;", '"')
        )
        home = client.get("/homes/H1").text
        assert 'src="https://cdn.example.com/p/1.jpg"' in home
        assert 'href="https://portal.example.com/orders/1"' in home
        assert "Front of the house" in home
        assert 'javascript:alert(1)"' not in home  # not a link target
        assert 'href="javascript:' not in home
        assert "<script>alert(2)" not in home
        assert "&lt;script&gt;" in home or "odd_link" in home
        assert "trigger_fired" in home
        rules = client.get("/rules").text
        assert "PASS" in rules
        assert client.get("/orders?since=yesterday").status_code == 400
        assert client.get("/audit?kind=made_up").status_code == 400
        assert client.get("/orders/nope").status_code == 404
        assert client.get("/homes/nope").status_code == 404

        export = client.get("/audit.csv?property=H1")
        assert export.status_code == 200
        assert export.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert rows
        assert {row["external_property_id"] for row in rows} == {"H1"}
        assert [int(r["id"]) for r in rows] == sorted(int(r["id"]) for r in rows)
        assert SECRET_CODE not in export.text


def test_orders_and_audit_pages_are_keyset_paginated(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    with serve_console(settings, now=clock) as served, served.client() as client:
        served.console.page_size = 1
        served.console.audit_page_size = 3
        add_users(served.state, clock, "vera")
        assert log_in(client, "vera").status_code == 303
        first = client.get("/orders?state=awaiting_approval")
        link = first.text.split('href="/orders?')[1].split('"')[0].replace("&amp;", "&")
        assert "before=" in link
        second = client.get("/orders?" + link)
        shown_first = [i for i in ids.values() if f"/orders/{i}" in first.text]
        shown_second = [i for i in ids.values() if f"/orders/{i}" in second.text]
        assert len(shown_first) == 1
        assert len(shown_second) == 1
        assert shown_first != shown_second
        assert 'rel="next"' not in second.text
        audit_first = client.get("/audit")
        assert 'rel="next"' in audit_first.text


def test_sessions_end_when_the_password_changes_or_the_user_is_disabled(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        assert log_in(client, "alice").status_code == 303
        assert client.get("/").status_code == 200
        set_password(served.state, "alice", "a-brand-new-password", by="adam", now=clock())
        assert client.get("/").status_code == 303
        assert log_in(client, "alice", "a-brand-new-password").status_code == 303
        set_disabled(served.state, "alice", True, by="adam", now=clock())
        assert client.get("/").status_code == 303
        assert log_in(client, "alice", "a-brand-new-password").status_code == 401

        # Removed and added again under the same name: the old sessions stay dead.
        add_users(served.state, clock, "vera")
        assert log_in(client, "vera").status_code == 303
        assert client.get("/").status_code == 200
        remove_user(served.state, "vera", by="adam", now=clock())
        add_users(served.state, clock, "vera")
        assert client.get("/").status_code == 303


def test_proxy_auth_believes_the_user_header_only_from_trusted_proxies(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    header = {"X-Auth-Request-User": "vera"}
    trusted = console_settings(
        state_url,
        pm,
        sandbox,
        auth="proxy",
        proxy_user_header="X-Auth-Request-User",
        trusted_proxies=["127.0.0.0/8"],
    )
    with serve_console(trusted, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "vera")
        page = client.get("/", headers=header)
        assert page.status_code == 200
        assert "vera (viewer)" in page.text
        assert client.get("/", headers={"X-Auth-Request-User": "mallory"}).status_code == 403
        assert client.get("/").status_code == 403
        forged = client.post("/attention/ack", headers=header, data={"item": "x", "reason": "x"})
        assert forged.status_code == 403
    untrusted = console_settings(
        state_url,
        pm,
        sandbox,
        auth="proxy",
        proxy_user_header="X-Auth-Request-User",
        trusted_proxies=["10.0.0.9"],
    )
    with serve_console(untrusted, now=clock) as served, served.client() as client:
        refused = client.get("/", headers=header)
        assert refused.status_code == 403
        assert "vera (viewer)" not in refused.text


def test_console_settings_need_no_session_secret_but_refuse_a_short_one(tmp_path: Path) -> None:
    config = tmp_path / "propready.toml"
    config.write_text(
        '[source]\nurl = "sqlite:///pm.db"\nquery = "SELECT 1 AS external_property_id"\n'
        '[console]\nlisten = "127.0.0.1:8720"\n'
    )
    settings = load_settings(config)  # the key is generated and kept in the state database
    assert settings.console.session_secret.get_secret_value() == ""
    config.write_text(
        '[source]\nurl = "sqlite:///pm.db"\nquery = "SELECT 1 AS external_property_id"\n'
        '[console]\nlisten = "127.0.0.1:8720"\nsession_secret = "short"\n'
    )
    with pytest.raises(ConfigError, match="at least 32 characters"):
        load_settings(config)
    config.write_text(
        '[source]\nurl = "sqlite:///pm.db"\nquery = "SELECT 1 AS external_property_id"\n'
        '[console]\nlisten = "127.0.0.1:8720"\nauth = "proxy"\ntrusted_proxies = ["*"]\n'
    )
    with pytest.raises(ConfigError, match="not an IP address"):
        load_settings(config)


def test_reorder_goes_through_the_live_rules_and_is_audited_with_the_user(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        assert log_in(client, "alice").status_code == 303
        token = csrf_of(client.get("/homes/H2"))
        no_reason = client.post("/homes/H2/reorder", data={"csrf_token": token, "reason": ""})
        assert no_reason.status_code == 409
        assert "reason" in no_reason.text
        canceled = client.post(
            f"/orders/{ids['H2']}/cancel",
            data={"csrf_token": token, "reason": "duplicate_order", "notes": "wrong services"},
        )
        assert canceled.status_code == 303
        again = client.post(
            "/homes/H2/reorder", data={"csrf_token": token, "reason": "services fixed"}
        )
        assert again.status_code == 303, again.text[:500]
        assert "Reordered H2 (" in client.get(again.headers["location"]).text
        [requested] = [
            row
            for row in audit_rows(served.state, "reorder_requested")
            if row["detail"].get("reason") == "services fixed"
        ]
        assert requested["detail"]["by"] == "alice"
        with served.state.connect() as connection:
            states = sorted(
                o.state.value
                for o in outbox.list_orders(connection)
                if o.external_property_id == "H2"
            )
        assert states == ["awaiting_approval", "canceled"]


def test_refusals_on_pages_are_one_clear_message(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A rule folder that does not load, a bad filter on the CSV export, a snooze for no known
    duration, an unknown action: each answered on the page, never a server error."""
    clock = Clock()
    broken = tmp_path / "rules"
    broken.mkdir()
    (broken / "bad.yaml").write_text("rules: [this is: not: valid\n")
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    settings = settings.model_copy(
        update={"rules": settings.rules.model_copy(update={"path": broken})}
    )
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        assert log_in(client, "alice").status_code == 303
        rules = client.get("/rules")
        assert rules.status_code == 200
        assert "cannot be loaded" in rules.text
        assert "bad.yaml" in rules.text
        assert client.get("/audit.csv?kind=made_up").status_code == 400
        token = csrf_of(client.get("/"))
        snooze = client.post(
            "/attention/snooze",
            data={
                "csrf_token": token,
                "item": f"approval:{ids['H1']}",
                "for": "soon",
                "reason": "x",
            },
        )
        assert snooze.status_code == 409
        unknown = client.post(f"/orders/{ids['H1']}/explode", data={"csrf_token": token})
        assert unknown.status_code == 404
        assert order_state(served.state, ids["H1"]) == "awaiting_approval"


def test_an_order_a_budget_held_is_approved_over_budget_only_with_a_reason(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """The budget is re-checked on approval (from the live rule files): refused without a
    reason, refused while the rule files cannot be loaded, approved over budget with one."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(REPO / "rules" / "readiness.yaml", rules)
    budgets = (
        "budgets:\n  - {name: one-a-day, billing_entity_slug: '*', period: day, max_orders: 1}\n"
    )
    (rules / "budgets.yaml").write_text(budgets)
    settings = console_settings(state_url, pm, sandbox)
    settings = settings.model_copy(
        update={
            "rules": settings.rules.model_copy(update={"path": rules}),
            "orders": settings.orders.model_copy(update={"mode": "live"}),
        }
    )
    clock = Clock()
    with wired(settings) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        pm.set("H2", status="Vacant Unrented Ready")
        clock.now += timedelta(minutes=5)
        run_cycle(parts, clock)
        with parts.state.connect() as connection:
            [held] = [
                o for o in outbox.list_orders(connection) if o.state.value == "awaiting_approval"
            ]
    assert held.held_by_budget == "one-a-day"
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        assert log_in(client, "alice").status_code == 303
        page = client.get(f"/orders/{held.external_order_id}")
        assert "Approve over budget" in page.text
        token = csrf_of(page)
        url = f"/orders/{held.external_order_id}/approve"
        plain = client.post(url, data={"csrf_token": token})
        assert plain.status_code == 409
        assert "--over-budget" in plain.text
        (rules / "budgets.yaml").write_text("budgets: [nope\n")
        unreadable = client.post(
            url, data={"csrf_token": token, "over_budget": "yes", "reason": "x"}
        )
        assert unreadable.status_code == 409
        assert "rule files cannot be loaded" in unreadable.text
        (rules / "budgets.yaml").write_text(budgets)
        over = client.post(
            url, data={"csrf_token": token, "over_budget": "yes", "reason": "open house Friday"}
        )
        assert over.status_code == 303
        assert order_state(served.state, held.external_order_id) == "planned"
        [row] = audit_rows(served.state, "order_approved")
        assert row["detail"]["approved_by"] == "alice"
        assert row["detail"]["over_budget_reason"] == "open house Friday"


def deliver(
    state: sa.Engine, external_order_id: str, at: datetime, *, entity: str | None = None
) -> None:
    """The order delivered at `at` with a photo manager link, an unsafe link and two photos,
    stored as the apply step stores them (adapters/store/deliverables.py)."""
    with state.begin() as connection:
        order = outbox.find_by_external_order_id(connection, external_order_id)
        assert order is not None
        values: dict[str, Any] = {"delivered_at": at}
        if entity is not None:
            values["billing_entity_slug"] = entity
        connection.execute(sa.update(orders).where(orders.c.id == order.id).values(**values))
        links = deliverables.link_rows(
            {
                "photo_manage_link": f"https://portal.example.com/{external_order_id}",
                "zz_odd_link": "javascript:alert(1)",
            }
        )
        photos = [
            {
                **links[0],
                "kind": "photo",
                "name": "photo",
                "sequence": n,
                "url": f"https://cdn.example.com/{n}.jpg",
            }
            for n in (1, 2)
        ]
        deliverables.upsert(connection, order.id, links + photos, at, overwrite=True)


def test_the_deliveries_page_lists_delivered_orders_newest_first_with_their_links(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "vera")
        assert log_in(client, "vera").status_code == 303  # a viewer may read it
        assert 'href="/deliveries"' in client.get("/").text
        empty = client.get("/deliveries")
        assert empty.status_code == 200
        assert "No deliveries match." in empty.text

        deliver(served.state, ids["H1"], datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
        page = client.get("/deliveries")
        assert page.status_code == 200
        assert f'href="/orders/{ids["H1"]}"' in page.text
        assert 'href="/homes/H1"' in page.text
        assert f'href="https://portal.example.com/{ids["H1"]}"' in page.text
        assert "2026-11-20 15:00" in page.text
        assert "<td>2</td>" in page.text  # two photos
        assert 'href="javascript:' not in page.text
        assert ids["H2"] not in page.text  # not delivered

        served.console.page_size = 1
        deliver(
            served.state, ids["H2"], datetime(2026, 11, 25, 9, 0, tzinfo=UTC), entity="other_llc"
        )
        first = client.get("/deliveries")
        assert ids["H2"] in first.text  # newest delivery first
        assert ids["H1"] not in first.text
        link = first.text.split('href="/deliveries?')[1].split('"')[0].replace("&amp;", "&")
        second = client.get("/deliveries?" + link)
        assert second.status_code == 200
        assert ids["H1"] in second.text
        assert ids["H2"] not in second.text
        assert 'rel="next"' not in second.text

        served.console.page_size = 50
        by_entity = client.get("/deliveries?entity=other_llc").text
        assert ids["H2"] in by_entity
        assert ids["H1"] not in by_entity
        by_date = client.get("/deliveries?since=2026-11-01&until=2026-11-21").text
        assert ids["H1"] in by_date
        assert ids["H2"] not in by_date
        assert client.get("/deliveries?since=last-week").status_code == 400
        assert client.get("/deliveries?at=nonsense&before=3").status_code == 400


def stored_session_secret(state: sa.Engine) -> str:
    with state.connect() as connection:
        return str(
            connection.execute(
                sa.select(console_secret.c.value).where(console_secret.c.name == SESSION_KEY)
            ).scalar_one()
        )


def test_without_a_configured_secret_every_start_shares_one_generated_in_the_database(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    generated = console_settings(state_url, pm, sandbox, session_secret="")
    with (
        serve_console(generated, now=clock) as one,
        serve_console(generated, now=clock) as two,
        one.client() as client,
    ):
        add_users(one.state, clock, "alice")
        assert log_in(client, "alice").status_code == 303
        cookie = str(client.cookies.get("propready_console"))
        secret = stored_session_secret(one.state)
        assert len(secret) >= 48
        with two.client() as other:  # the other process accepts the first one's cookie
            other.cookies.set("propready_console", cookie)
            page = other.get("/")
            assert page.status_code == 200
            assert "alice (approver)" in page.text
            for path in ("/", "/orders", "/deliveries", "/audit", "/audit.csv"):
                assert secret not in other.get(path).text, path
        assert secret not in caplog.text
        assert all(secret not in str(row) for row in audit_rows(one.state, "console_login"))
    with serve_console(generated, now=clock) as again, again.client() as client:  # a restart
        client.cookies.set("propready_console", cookie)
        assert client.get("/").status_code == 200
        assert stored_session_secret(again.state) == secret

    configured = console_settings(state_url, pm, sandbox)  # a configured secret wins
    with serve_console(configured, now=clock) as served, served.client() as client:
        client.cookies.set("propready_console", cookie)
        assert client.get("/").status_code == 303  # signed with the other key: not accepted
        assert log_in(client, "alice").status_code == 303
        assert client.get("/").status_code == 200
        assert stored_session_secret(served.state) == secret  # the stored one is left alone


def test_two_processes_generating_the_secret_at_once_keep_one(state_url: str) -> None:
    engine = create_state_engine(state_url)
    barrier = threading.Barrier(4)
    candidates = iter(secrets.token_urlsafe(48) for _ in range(4))
    lock = threading.Lock()

    def generate() -> str:
        with lock:
            value = next(candidates)
        barrier.wait(timeout=30)  # every start has its candidate before anyone inserts
        return value

    def start() -> str:
        return stored_secret(engine, SESSION_KEY, generate, datetime.now(UTC))

    try:
        with ThreadPoolExecutor(4) as pool:
            kept = list(pool.map(lambda _: start(), range(4)))
        assert len(set(kept)) == 1
        assert kept[0] == stored_session_secret(engine)
    finally:
        engine.dispose()


def test_admins_disable_enable_and_reset_passwords_audited_with_their_name(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    with serve_console(settings, now=clock) as served:
        add_users(served.state, clock)
        with served.client() as vera, served.client() as alice, served.client() as admin:
            assert log_in(vera, "vera").status_code == 303
            assert log_in(alice, "alice").status_code == 303
            assert log_in(admin, "adam").status_code == 303
            token = csrf_of(alice.get("/"))
            for action, data in (
                ("disable", {}),
                ("password", {"password": "alice-took-over-1", "password2": "alice-took-over-1"}),
            ):  # an approver may not manage users
                refused = alice.post(f"/users/vera/{action}", data={"csrf_token": token, **data})
                assert refused.status_code == 403
            assert vera.get("/").status_code == 200

            page = admin.get("/users")
            assert 'action="/users/vera/disable"' in page.text
            assert 'action="/users/adam/disable"' not in page.text  # not themselves
            token = csrf_of(page)
            assert admin.post("/users/vera/disable", data={}).status_code == 403  # no CSRF
            assert vera.get("/").status_code == 200
            yourself = admin.post("/users/adam/disable", data={"csrf_token": token})
            assert yourself.status_code == 409
            assert "cannot disable yourself" in yourself.text

            disabled = admin.post("/users/vera/disable", data={"csrf_token": token})
            assert disabled.status_code == 303
            assert "Disabled vera" in admin.get(disabled.headers["location"]).text
            assert vera.get("/").status_code == 303  # her session ended
            assert log_in(vera, "vera").status_code == 401
            enabled = admin.post("/users/vera/enable", data={"csrf_token": token})
            assert enabled.status_code == 303
            assert log_in(vera, "vera").status_code == 303

            differ = admin.post(
                "/users/vera/password",
                data={"csrf_token": token, "password": "vera-new-secret-1", "password2": "x" * 17},
            )
            assert differ.status_code == 409
            assert "differ" in differ.text
            short = admin.post(
                "/users/vera/password",
                data={"csrf_token": token, "password": "short-one", "password2": "short-one"},
            )
            assert short.status_code == 409
            assert "12" in short.text
            assert "short-one" not in short.text
            missing = admin.post("/users/nobody/enable", data={"csrf_token": token})
            assert missing.status_code == 409
            assert audit_rows(served.state, "console_user_password_changed") == []

            new = "vera-new-secret-1"
            reset = admin.post(
                "/users/vera/password",
                data={"csrf_token": token, "password": new, "password2": new},
            )
            assert reset.status_code == 303
            assert new not in admin.get(reset.headers["location"]).text
            assert vera.get("/").status_code == 303  # her session ended again
            assert log_in(vera, "vera").status_code == 401  # the old password is gone
            assert log_in(vera, "vera", new).status_code == 303

        for kind in (
            "console_user_disabled",
            "console_user_enabled",
            "console_user_password_changed",
        ):
            [row] = audit_rows(served.state, kind)
            assert row["detail"] == {"user": "vera", "by": "adam"}, kind
        assert all(
            new not in str(row) for row in audit_rows(served.state, "console_user_password_changed")
        )


def test_a_state_database_without_the_key_table_is_one_line_at_start(
    tmp_path: Path, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    empty = f"sqlite:///{tmp_path / 'not-migrated.db'}"
    settings = console_settings(empty, pm, sandbox, session_secret="")
    engine = create_state_engine(empty)
    try:
        with pytest.raises(StateUnavailable) as refused:
            Console(console_deps(settings, engine))
    finally:
        engine.dispose()
    message = str(refused.value)
    assert message.startswith("state.url: ")
    assert "\n" not in message
    assert "console_secret" in message
    configured = console_settings(empty, pm, sandbox)  # a configured key needs no table
    engine = create_state_engine(empty)
    try:
        Console(console_deps(settings=configured, state=engine))
    finally:
        engine.dispose()


def test_an_approver_holds_a_planned_order_with_a_reason_and_approves_it_again(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """Hold goes through the same service as `orders hold`: planned -> awaiting_approval,
    audited with the user and the reason; the form is offered for planned orders only and the
    order is not sent until it is approved again."""
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "alice")
        assert log_in(client, "alice").status_code == 303
        page = client.get(f"/orders/{ids['H1']}")
        token = csrf_of(page)
        assert f"/orders/{ids['H1']}/hold" not in page.text  # awaiting approval: nothing to hold
        early = client.post(
            f"/orders/{ids['H1']}/hold", data={"csrf_token": token, "reason": "wait"}
        )
        assert early.status_code == 409
        assert "only a planned order can be held" in early.text
        client.post(f"/orders/{ids['H1']}/approve", data={"csrf_token": token})
        page = client.get(f"/orders/{ids['H1']}")
        assert f"/orders/{ids['H1']}/hold" in page.text
        blank = client.post(f"/orders/{ids['H1']}/hold", data={"csrf_token": token, "reason": ""})
        assert blank.status_code == 409
        assert "a reason is required" in blank.text
        held = client.post(
            f"/orders/{ids['H1']}/hold",
            data={"csrf_token": token, "reason": "tenant still moving out"},
        )
        assert held.status_code == 303
        assert "Held" in client.get(held.headers["location"]).text
        assert order_state(served.state, ids["H1"]) == "awaiting_approval"
        [row] = audit_rows(served.state, "order_held")
        assert row["detail"]["held_by"] == "alice"
        assert row["detail"]["hold_reason"] == "tenant still moving out"
        assert "held by alice: tenant still moving out" in client.get(f"/orders/{ids['H1']}").text
        with wired(settings) as parts:
            run_cycle(parts, clock)
        assert order_state(served.state, ids["H1"]) == "awaiting_approval"
        assert sandbox.requests_seen() == 0
        client.post(f"/orders/{ids['H1']}/approve", data={"csrf_token": token})
        with wired(settings) as parts:
            run_cycle(parts, clock)
        assert order_state(served.state, ids["H1"]) == "placed"
        assert sandbox.requests_seen() == 1


def test_the_rules_page_compares_an_uploaded_candidate_like_simulate_rules(
    state_url: str, pm: PmDatabase, sandbox: SandboxServer
) -> None:
    """A viewer uploads candidate rule files (or pastes one) and sees which homes would gain or
    lose which services; a broken candidate is refused with its problems, one line each, and
    nothing is written or changed."""
    clock = Clock()
    settings = console_settings(state_url, pm, sandbox)
    orders_awaiting_approval(settings, pm, clock)  # H1 and H2 are ready now
    live_text = (REPO / "rules" / "readiness.yaml").read_text()
    candidate = live_text.replace("{slug: photos, quantity: 25}", "{slug: photos, quantity: 20}")
    assert candidate != live_text
    with serve_console(settings, now=clock) as served, served.client() as client:
        add_users(served.state, clock, "vera")  # a viewer: comparing sends and writes nothing
        assert log_in(client, "vera").status_code == 303
        page = client.get("/rules")
        token = csrf_of(page)
        assert 'action="/rules/simulate#compare"' in page.text
        with served.state.connect() as connection:
            before = len(audit.query_events(connection))

        compared = client.post(
            "/rules/simulate",
            data={"csrf_token": token},
            files=[("files", ("readiness.yaml", candidate.encode(), "application/yaml"))],
        )
        assert compared.status_code == 200, compared.text.split('id="compare"', 1)[-1][:1500]
        assert "2 of 2 home(s) would change" in compared.text
        for home_id in ("H1", "H2"):
            assert f'<a href="/homes/{home_id}">{home_id}</a>' in compared.text
        assert "<td>photos x20</td><td>photos x25</td>" in compared.text  # gained, lost

        same = client.post(
            "/rules/simulate", data={"csrf_token": token, "text": live_text}, files=[]
        )
        assert same.status_code == 200
        assert "0 of 2 home(s) would change" in same.text

        broken = live_text.replace("triggered_by: [vacant_ready]", "triggered_by: [vacant_redy]")
        refused = client.post("/rules/simulate", data={"csrf_token": token, "text": broken})
        assert refused.status_code == 400
        assert "The candidate rule files cannot be used: 1 problem(s)" in refused.text
        assert "candidate/pasted.yaml:" in refused.text
        assert "vacant_redy" in refused.text

        empty = client.post("/rules/simulate", data={"csrf_token": token, "text": " "})
        assert empty.status_code == 400
        assert "choose one or more candidate rule files" in empty.text
        not_yaml = client.post(
            "/rules/simulate",
            data={"csrf_token": token},
            files=[("files", ("rules.txt", b"triggers: {}", "text/plain"))],
        )
        assert not_yaml.status_code == 400
        assert "rules.txt: not a rule file (.yaml)" in not_yaml.text
        forged = client.post("/rules/simulate", data={"text": live_text})
        assert forged.status_code == 403

        with served.state.connect() as connection:
            assert len(audit.query_events(connection)) == before
        # The live rules are unchanged: the page still shows their version.
        assert page.text.count("Version <code>") == 1
        version = page.text.split("Version <code>", 1)[1].split("<", 1)[0]
        assert f"Version <code>{version}</code>" in client.get("/rules").text
