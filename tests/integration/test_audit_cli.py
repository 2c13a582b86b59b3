"""`propready audit` filters, `propready explain` and `propready report` on a known history."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.store import audit
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.schema import orders
from propready.service import run_cycle
from tests.integration.audit_support import T0, propready, write_config
from tests.integration.cycle_support import (
    API_KEY,
    SECRET_CODE,
    Clock,
    PmDatabase,
    home,
    make_settings,
    wired,
)


def _order(connection: sa.Connection, order_id: int, prop: str, entity: str, event: int) -> None:
    """One order's rows: event, decision, order row, creation, placement."""
    at = T0 + timedelta(days=order_id)
    connection.execute(
        orders.insert().values(
            id=order_id,
            external_order_id=f"PR-{prop}-{order_id}",
            external_property_id=prop,
            billing_entity_slug=entity,
            state="placed",
            payload={},
            rule_id=f"rule-{entity}",
            created_at=at,
            window_end=at,
            updated_at=at,
        )
    )
    common = {"external_property_id": prop, "event_id": event, "rule_id": f"rule-{entity}"}
    audit.record(connection, "trigger_fired", at, trigger_name="vacant_ready", **common)
    audit.record(
        connection,
        "rule_matched",
        at,
        detail={"trace": [{"rule_id": f"rule-{entity}", "condition": "true", "result": True}]},
        **common,
    )
    refs = {"order_id": order_id, "external_order_id": f"PR-{prop}-{order_id}", **common}
    audit.record(
        connection,
        "order_created",
        at,
        detail={"billing_entity_slug": entity, "services": [{"slug": "photos", "quantity": 9}]},
        **refs,
    )
    audit.record(
        connection, "order_placed", at + timedelta(minutes=3), detail={"vendor_order_id": 7}, **refs
    )


@pytest.fixture
def known(state_url: str, tmp_path: Path) -> Path:
    """Two homes, two entities, one order each; returns a config file for the CLI."""
    engine = create_state_engine(state_url)
    try:
        with engine.begin() as connection:
            _order(connection, 1, "P1", "entity_a", 11)
            _order(connection, 2, "P2", "entity_b", 12)
            audit.record(connection, "rules_reloaded", T0, detail={"files": 2})
    finally:
        engine.dispose()
    return write_config(tmp_path, state_url)


def _csv(stdout: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(stdout)))


def test_audit_filters(known: Path) -> None:
    """Each filter narrows the rows; order and entity filters keep the decision that led there."""
    by_entity = propready(known, "audit", "--entity", "entity_b", "--format", "csv")
    assert by_entity.returncode == 0, by_entity.stderr
    assert [(r["external_property_id"], r["kind"]) for r in _csv(by_entity.stdout)] == [
        ("P2", "trigger_fired"),
        ("P2", "rule_matched"),
        ("P2", "order_created"),
        ("P2", "order_placed"),
    ]
    by_order = propready(known, "audit", "--order", "PR-P1-1", "--kind", "order_placed")
    assert "PR-P1-1" in by_order.stdout
    assert "PR-P2-2" not in by_order.stdout
    lines = propready(
        known,
        *("audit", "--rule", "rule-entity_a", "--since", "2026-11-03T09:00:00"),
        *("--until", "2026-11-03T09:02:00", "--format", "jsonl"),
    ).stdout.splitlines()
    assert [json.loads(line)["kind"] for line in lines] == [
        "trigger_fired",
        "rule_matched",
        "order_created",
    ]
    new_kind = _csv(propready(known, "audit", "--kind", "rules_reloaded", "--format", "csv").stdout)
    assert [r["detail"] for r in new_kind] == ['{"files": 2}']


def test_explain_tells_the_story_as_table_and_json(known: Path) -> None:
    """`explain` lists a home's events in time order with a readable summary line each."""
    table = propready(known, "explain", "P1")
    assert table.returncode == 0, table.stderr
    assert "property P1" in table.stdout
    assert "order_placed" in table.stdout
    story = [
        json.loads(line)
        for line in propready(known, "explain", "P1", "--format", "jsonl").stdout.splitlines()
    ]
    assert [s["kind"] for s in story] == [
        "trigger_fired",
        "rule_matched",
        "order_created",
        "order_placed",
    ]
    assert story[1]["summary"] == "rule rule-entity_a matched: ; rule-entity_a: true -> True"
    assert story[2]["summary"] == "order PR-P1-1 created (None) for entity_a: photos x9"
    assert story[3]["summary"] == "placed: vendor order 7 (None)"
    assert story[2]["detail"]["services"] == [{"slug": "photos", "quantity": 9}]
    missing = propready(known, "explain", "NOPE")
    assert missing.returncode == 1
    assert "nothing recorded" in missing.stderr


class Charts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.svgs = 0
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"

    def handle_data(self, data: str) -> None:
        self.text += data


def test_report_renders_the_known_history(known: Path, tmp_path: Path) -> None:
    """The HTML report has four charts and the history's figures."""
    out = tmp_path / "report.html"
    result = propready(
        known, "report", "--since", "2026-11-01", "--until", "2026-12-01", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    page = Charts()
    page.feed(out.read_text())
    assert page.svgs == 4
    assert "Orders placed2" in page.text
    assert "2026-W45 · entity_a: 1" in page.text
    assert "1-5 min · orders: 2" in page.text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_a_headless_browser(known: Path, tmp_path: Path) -> None:
    """Chromium opens the report offline and paints a screenshot of a sensible size."""
    out = tmp_path / "report.html"
    assert propready(known, "report", "--since", "2026-11-01", "--out", str(out)).returncode == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            *("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"),
            *("--user-data-dir=" + str(tmp_path / "profile"), "--window-size=900,1800"),
            f"--screenshot={shot}",
            out.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (900, 1800)
    assert len(png) > 20_000  # a blank page compresses to a few kilobytes; charts do not


def test_no_secret_in_audit_views_explain_or_report_after_a_cycle(
    state_url: str, tmp_path: Path
) -> None:
    """After a real cycle that sends a lockbox code, no CLI output or report contains it or the key."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(home("H1", status="Vacant Unrented Ready"), home("H2"))
    with SandboxServer(SandboxConfig.default()) as sandbox:
        settings = make_settings(state_url, pm.url, sandbox.url, first_sight="fire")
        with wired(settings) as parts:
            run_cycle(parts, Clock())
        sent = sandbox.orders
    pm.close()
    assert sent[0]["property_access"]["access_code"] == SECRET_CODE
    config = write_config(tmp_path, state_url)
    out = tmp_path / "report.html"
    outputs = [
        propready(config, "audit", "--format", "jsonl").stdout,
        propready(config, "explain", "H1", "--format", "jsonl").stdout,
        propready(config, "explain", "H1").stdout,
        propready(config, "report", "--since", "2026-01-01", "--out", str(out)).stdout,
        out.read_text(),
    ]
    assert "order_placed" in outputs[0]
    for text in outputs:
        assert SECRET_CODE not in text
        assert API_KEY not in text


def test_audit_latest_lists_the_newest_rows_newest_first(known: Path) -> None:
    """--latest N gives the N newest matching rows, newest first; with --limit it is refused."""
    latest = _csv(propready(known, "audit", "--latest", "3", "--format", "csv").stdout)
    assert [r["kind"] for r in latest] == ["rules_reloaded", "order_placed", "order_created"]
    assert [int(r["id"]) for r in latest] == sorted((int(r["id"]) for r in latest), reverse=True)
    placed = _csv(
        propready(
            known, "audit", "--latest", "1", "--kind", "order_placed", "--format", "csv"
        ).stdout
    )
    assert [r["external_order_id"] for r in placed] == ["PR-P2-2"]
    both = propready(known, "audit", "--latest", "1", "--limit", "5")
    assert both.returncode == 2
    assert both.stderr.strip() == (
        "propready audit: give --latest N or --limit N, not both (see `propready audit --help`)"
    )


def test_audit_refuses_an_unknown_kind_with_the_list(known: Path) -> None:
    """A misspelt kind is refused in one line listing the kinds, instead of matching nothing."""
    result = propready(known, "audit", "--kind", "order_place")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert (
        "Invalid value for '--kind': 'order_place' is not one of 'trigger_fired'," in result.stderr
    )
    assert "'order_placed'" in result.stderr
