"""Pre-flight: `check` builds and validates the order of every home ready now, `simulate` shows it
per home with what the state database says, and `check` tests the vendor's URL and key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import migrate, outbox
from propready.adapters.store.engine import create_state_engine
from propready.core.simulation import Standing
from propready.service import run_cycle
from propready.service.preflight import SimulatedHome, simulate_homes
from tests.integration.cli_support import run_cli as run
from tests.integration.cycle_support import (
    QUERY,
    REPO,
    Clock,
    PmDatabase,
    home,
    make_settings,
    wired,
)

# A RentManager-style schema: nothing is called what propready calls it.
UNITS_DDL = """
CREATE TABLE units (
  unit_code text PRIMARY KEY, unit_status text, addr1 text, town text, st text, zip text,
  lock_kind text, lock_code text, lock_spot text, agent text, agent_phone text, beds integer
)"""
BASE_QUERY = (
    "SELECT unit_code AS external_property_id, unit_status AS status, addr1 AS street, "
    "town AS city, st AS state, zip AS postal_code, 'single_family' AS property_type, "
    "beds AS bedrooms, CAST(NULL AS date) AS construction_final_date, "
    "'investment_entity_1' AS billing_entity_slug FROM units"
)
ACCESS_COLUMNS = (
    "CASE lock_kind WHEN 'LB' THEN 'lockbox_code' WHEN 'KP' THEN 'keypad' END "
    "AS method_of_access, lock_code AS access_code, lock_spot AS lockbox_location, "
    "agent AS onsite_contact_name, agent_phone AS onsite_contact_phone, "
)


def _units(count: int) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(count):
        status = "Vacant Unrented Ready" if n % 3 else "Occupied"
        zip_code = "8020" if n == 4 else "80205"
        rows.append(
            (f"RM-{n:03d}", status, f"{n} Main St", "Denver", "CO", zip_code, "LB", "4417",
             "porch", "Pat Lee", "+1 303-555-0100", 3)
        )  # fmt: skip
    return rows


@pytest.fixture
def units_db(pg_database: str) -> str:
    """A PostgreSQL PM database with 12 units (8 ready, one with a 4-digit ZIP)."""
    with psycopg.connect(pg_database, autocommit=True) as connection:
        connection.execute(UNITS_DDL)
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO units VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                _units(12),
            )
    return pg_database.replace("postgresql://", "postgresql+psycopg://")


def _config(tmp_path: Path, state_url: str, source_url: str, query: str, base_url: str, **extra: str) -> Path:  # fmt: skip
    config = tmp_path / "propready.toml"
    sections = {
        "state": {"url": state_url},
        "source": {"url": source_url, "query": query},
        "rules": {"path": str(REPO / "rules")},
        "planomatic": {"base_url": base_url, "api_key": extra.pop("api_key", "sandbox-key")},
        "orders": {"mode": extra.pop("mode", "live")},
    }
    text = ""
    for name, values in sections.items():
        text += f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    config.write_text(text)
    return config


def _cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what ran before (a cycle's log lines) is not this command's output
    code = run(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_names_the_missing_columns_and_the_homes_then_passes(
    tmp_path: Path,
    state_url: str,
    units_db: str,
    sandbox: SandboxServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The new-user path: a foreign schema without access columns FAILs `check` with each vendor
    field, the column to add and a few homes; with the columns mapped only the bad ZIP is left."""
    config = _config(tmp_path, state_url, units_db, BASE_QUERY, sandbox.url)
    assert run(["--config", str(config), "db", "upgrade"]) == 0
    code, out, _err = _cli(capsys, config, "check")
    assert code == 1
    lines = out.splitlines()
    assert "FAIL orders: 8 home(s) ready now could not be ordered" in out
    groups = lines[lines.index(next(x for x in lines if x.startswith("FAIL orders"))) + 1 :]
    assert groups[0] == (
        "    property_access.method_of_access: missing (the source query returns no "
        "method_of_access column): 8 home(s): RM-001, RM-002, RM-004 and 5 more"
    )
    assert any("property_access.onsite_contact_name: missing" in g for g in groups)
    assert any("property_access.onsite_contact_phone: missing" in g for g in groups)
    assert any(
        g.startswith("    property.location.postal_code: unrecognized ('8020' is not a 5-digit")
        and g.endswith("1 home(s): RM-004")
        for g in groups
    )
    assert "PASS vendor: " in out  # the key and URL are fine; only the data is not

    fixed_query = BASE_QUERY.replace("SELECT ", "SELECT " + ACCESS_COLUMNS, 1)
    config = _config(tmp_path, state_url, units_db, fixed_query, sandbox.url)
    code, out, _err = _cli(capsys, config, "check")
    assert code == 1
    assert "FAIL orders: 1 home(s) ready now could not be ordered (of 8" in out
    assert "property_access" not in out
    assert sandbox.orders == []  # check sends nothing


def test_check_passes_when_every_order_is_valid(
    tmp_path: Path, state_url: str, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every line passes on the shipped rules and a tidy PM database, dry_run included."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1", status="Vacant Unrented Ready"), home("H2"))
    pm.close()
    config = _config(tmp_path, state_url, pm.url, QUERY, sandbox.url, mode="dry_run")
    assert run(["--config", str(config), "db", "upgrade"]) == 0
    code, out, err = _cli(capsys, config, "check")
    assert code == 0, out + err
    assert "PASS orders: 1 home(s) ready now would be ordered; every order passes" in out
    assert (
        f"PASS vendor: {sandbox.url} answers like the API; the key is accepted "
        "(dry_run: nothing is sent yet)"
    ) in out


# --- the vendor line ----------------------------------------------------------------------------


class _FixedAnswer(BaseHTTPRequestHandler):
    status = 404
    body = b"<html><body>Not Found</body></html>"
    content_type = "text/html"

    def do_POST(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def web_page() -> Iterator[str]:
    """A web server that is not the API: every POST gets an HTML 404."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FixedAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _vendor_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_url: str, **extra: str
) -> tuple[int, str]:
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.close()
    state = f"sqlite:///{tmp_path / 'state.db'}"
    config = _config(tmp_path, state, pm.url, QUERY, base_url, **extra)
    assert run(["--config", str(config), "db", "upgrade"]) == 0
    code, out, _err = _cli(capsys, config, "check")
    (line,) = [x for x in out.splitlines() if "vendor:" in x]
    return code, line


def test_check_fails_a_refused_key_with_the_vendors_words_in_dry_run_too(
    tmp_path: Path, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong key FAILs with `api_key: unauthorized`, even in dry_run where nothing is sent."""
    code, line = _vendor_line(tmp_path, capsys, sandbox.url, api_key="wrong", mode="dry_run")
    assert code == 1
    assert line == (
        f"FAIL vendor: PlanOmatic at {sandbox.url} refuses the API key (api_key: unauthorized); "
        "set planomatic.api_key (a credential or PROPREADY_PLANOMATIC__API_KEY)"
    )


def test_check_fails_a_url_that_answers_html(
    tmp_path: Path, web_page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A web page's 404 is not the API: FAIL naming the URL, the status and the content type."""
    code, line = _vendor_line(tmp_path, capsys, web_page)
    assert code == 1
    assert line == (
        f"FAIL vendor: planomatic.base_url: {web_page} does not answer like the PlanOmatic API "
        "(HTTP 404, text/html for POST /api/v3/orders/retrieve)"
    )


def test_check_fails_a_url_with_a_wrong_path(
    tmp_path: Path, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base URL with an extra path reaches a JSON 404 that is not the API's answer: FAIL."""
    code, line = _vendor_line(tmp_path, capsys, sandbox.url + "/v3")
    assert code == 1
    assert "does not answer like the PlanOmatic API (HTTP 404, JSON of another shape" in line


def test_check_fails_a_url_nobody_listens_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused connection FAILs with the setting, host:port and the socket's reason."""
    code, line = _vendor_line(tmp_path, capsys, "http://127.0.0.1:9")
    assert code == 1
    assert line == (
        "FAIL vendor: planomatic.base_url: cannot connect to 127.0.0.1:9 (connection refused)"
    )


# --- simulate and the state database -----------------------------------------------------------


def test_simulate_accounts_for_what_the_state_database_holds(
    tmp_path: Path, state_url: str, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """simulate says per home: already ordered for this readiness, first sight, an open order,
    inside a duplicate window, or would order at the next poll."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"), home("H2"), home("H3"), home("H4", status="Vacant Unrented Ready"))
    clock = Clock()
    settings = make_settings(state_url, pm.url, sandbox.url)
    with wired(settings) as parts:
        run_cycle(parts, clock)  # H4 is ready at first sight: remembered, not ordered
        pm.set("H1", status="Vacant Unrented Ready")
        clock.now += timedelta(minutes=5)
        run_cycle(parts, clock)  # H1 rises: ordered and placed
        pm.set("H2", status="Vacant Unrented Ready")
        clock.now += timedelta(minutes=5)
        approval = make_settings(state_url, pm.url, sandbox.url, mode="approval")
        with wired(approval) as waiting:
            run_cycle(waiting, clock)  # H2 rises: waits for approval
        pm.set("H1", status="Occupied")
        pm.set("H2", status="Occupied")
        clock.now += timedelta(minutes=5)
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")  # a new readiness inside H1's window
        pm.set("H2", status="Vacant Unrented Ready")  # a new readiness: H2's order still waits
        pm.set("H3", status="Vacant Unrented Ready")  # not polled yet: the next poll orders it
    pm.close()
    engine = create_state_engine(state_url)
    with engine.connect() as connection:
        h1_order = outbox.list_orders(connection)[0].external_order_id
    engine.dispose()
    config = _config(tmp_path, state_url, pm.url, settings.source.query, sandbox.url)
    code, out, err = _cli(capsys, config, "simulate", "--format", "jsonl")
    assert code == 0, err
    standing = {r["external_property_id"]: r["standing"] for r in map(json.loads, out.splitlines())}
    assert standing["H4"].startswith("first sight: not ordered")
    assert standing["H2"].startswith("open order pr-")
    assert standing["H2"].endswith("(awaiting_approval)")
    assert standing["H1"].startswith(f"inside the duplicate window of {h1_order} (placed) until")
    assert standing["H3"] == "would order at the next poll"
    assert "4 of 4 home(s) would be ordered now by the rules: 0 refused" in err
    assert "1 would be placed at the next poll, 1 not (first sight), 2 not" in err


def test_simulate_says_already_ordered_for_the_same_readiness(
    tmp_path: Path, state_url: str, sandbox: SandboxServer
) -> None:
    """A home whose current readiness has its order is `already ordered for this readiness`."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1"))
    clock = Clock()
    settings = make_settings(state_url, pm.url, sandbox.url)
    with wired(settings) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        run_cycle(parts, clock)
        homes = list(
            simulate_homes(
                settings, parts.state, parts.source, parts.rules, parts.catalog, clock.now
            )
        )
    pm.close()
    (simulated,) = homes
    assert isinstance(simulated, SimulatedHome)
    assert isinstance(simulated.standing, Standing)
    assert simulated.standing.kind == "already_ordered"
    assert simulated.standing.text.endswith("(placed)")


def test_simulate_does_not_create_a_missing_state_database(
    tmp_path: Path, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the first `db upgrade` simulate reads nothing from state and creates no file."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1", status="Vacant Unrented Ready"))
    pm.close()
    state = tmp_path / "state.db"
    config = _config(tmp_path, f"sqlite:///{state}", pm.url, QUERY, sandbox.url)
    code, out, err = _cli(capsys, config, "simulate", "--format", "csv")
    assert code == 0, err
    assert "first sight: not ordered" in out
    assert not state.exists()


def test_simulate_lists_the_vendors_problems_per_home(
    tmp_path: Path, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A home whose order PlanOmatic would refuse shows `refused` and each problem with its hint."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1", status="Vacant Unrented Ready", zip="802"))
    pm.close()
    config = _config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pm.url, QUERY, sandbox.url)
    code, out, err = _cli(capsys, config, "simulate", "--format", "jsonl")
    assert code == 0, err
    (row,) = map(json.loads, out.splitlines())
    assert row["standing"] == "refused by the vendor's checks"
    assert row["problems"] == (
        "property.location.postal_code: unrecognized "
        "('802' is not a 5-digit ZIP code or ZIP+4 (12345 or 12345-6789))"
    )
    code, out, err = _cli(capsys, config, "simulate", "--property", "H1")
    assert "the order would be refused by PlanOmatic's checks:" in out
    assert "1 refused by the vendor's checks" in err


def test_simulate_refuses_an_old_schema(
    tmp_path: Path, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state database behind the code's schema is refused in one line naming state.url."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.close()
    state = f"sqlite:///{tmp_path / 'state.db'}"
    engine = create_state_engine(state)
    migrate.upgrade(engine, "0001")
    engine.dispose()
    config = _config(tmp_path, state, pm.url, QUERY, sandbox.url)
    code, _out, err = _cli(capsys, config, "simulate")
    assert code == 1
    assert err == (
        "propready: state.url: the state database is at 0001, not the current schema; "
        "run `propready db upgrade`\n"
    )


def test_rules_test_refuses_a_computed_quantity_the_catalog_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A case whose CEL quantity gives 30 photos fails, although it expected 30."""
    rules = tmp_path / "sized.yaml"
    rules.write_text(
        "triggers:\n  ready: property.status == 'Ready'\n"
        "rules:\n  - id: sized\n    triggered_by: [ready]\n"
        "    services: [{slug: photos, quantity: 'property.bedrooms * 5'}]\n"
        "tests:\n"
        "  - {name: five, trigger: ready, property: {status: Ready, bedrooms: 5},"
        " expect: {services: [{slug: photos, quantity: 25}]}}\n"
        "  - {name: six, trigger: ready, property: {status: Ready, bedrooms: 6},"
        " expect: {services: [{slug: photos, quantity: 30}]}}\n"
    )
    code = run(["rules", "test", str(rules), "--fields", "status,bedrooms"])
    out, _err = capsys.readouterr()
    assert code == 1
    assert f"PASS  {rules}:8  five" in out
    assert f"FAIL  {rules}:9  six" in out
    assert (
        "! photos x30: the catalog does not accept quantity 30 (allowed: 10, 15, 20, 25); "
        "PlanOmatic would refuse the order"
    ) in out


def test_the_state_is_read_not_written_by_simulate(
    tmp_path: Path, state_url: str, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """simulate adds no audit row and no order to an existing state database."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1", status="Vacant Unrented Ready"))
    pm.close()
    config = _config(tmp_path, state_url, pm.url, QUERY, sandbox.url)
    engine = create_state_engine(state_url)
    count = sa.text("SELECT (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM orders)")
    with engine.connect() as connection:
        before = connection.execute(count).scalar()
    code, _out, err = _cli(capsys, config, "simulate")
    with engine.connect() as connection:
        after = connection.execute(count).scalar()
    engine.dispose()
    assert code == 0, err
    assert before == after
