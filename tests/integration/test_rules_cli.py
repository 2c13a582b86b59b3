"""Rule-file commands end to end through the CLI: rules test, rules check with fields, simulate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cycle_support import QUERY, REPO, PmDatabase, home


def _cli(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["--config", str(config)] if config is not None else []
    return subprocess.run(
        [sys.executable, "-m", "propready", *prefix, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PROPREADY_CONFIG": "/nonexistent/propready.toml"},
    )


@pytest.fixture
def portfolio(tmp_path: Path) -> Path:
    """A PM database with a ready large home, a ready condo and an occupied home; its config."""
    pm = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    pm.insert(
        home("H1", status="Vacant Unrented Ready", beds=4),
        home("H2", status="Vacant Unrented Ready", kind="condo_townhouse", beds=2),
        home("H3"),
    )
    pm.close()
    config = tmp_path / "propready.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///state.db"\n[source]\nurl = "sqlite:///pm.db"\n'
        f'query = "{QUERY}"\n[rules]\npath = "{REPO / "rules"}"\n[orders]\nmode = "dry_run"\n'
    )
    return config


def test_rules_test_passes_on_the_shipped_examples() -> None:
    """`rules test rules/` runs the shipped cases and exits 0."""
    result = _cli("rules", "test", str(REPO / "rules"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
    assert result.stdout.count("PASS") >= 5


def test_rules_test_shows_a_readable_diff_and_fails(tmp_path: Path) -> None:
    """A rule change that breaks a case prints expected, actual, the diff and the trace; exit 1."""
    broken = tmp_path / "readiness.yaml"
    text = (REPO / "rules" / "readiness.yaml").read_text()
    broken.write_text(
        text.replace("{slug: photos, quantity: 15}", "{slug: photos, quantity: 10}", 1)
    )
    result = _cli("rules", "test", str(broken))
    assert result.returncode == 1
    out = result.stdout
    assert f"FAIL  {broken}:" in out
    assert "expected: rule 'sfr-small'; photos x15" in out
    assert "actual:   rule 'sfr-small'; photos x10" in out
    assert "- photos x15  (expected, not ordered)" in out
    assert "+ photos x10  (ordered, not expected)" in out
    assert (
        'rule sfr-full-marketing: property.property_type == "single_family" && '
        "property.bedrooms >= 3 -> false  {property_type='single_family', bedrooms=2}"
    ) in out


def test_rules_check_refuses_a_field_the_source_query_does_not_return(
    tmp_path: Path, portfolio: Path
) -> None:
    """With a config, `rules check` learns the query's columns and refuses unknown fields."""
    candidate = tmp_path / "candidate.yaml"
    text = (REPO / "rules" / "readiness.yaml").read_text()
    candidate.write_text(text.replace("property.bedrooms >= 3 ?", "property.sqft >= 3 ?"))
    result = _cli("rules", "check", str(candidate), config=portfolio)
    assert result.returncode == 1
    assert "unknown field property.sqft (the source query does not return it" in result.stderr
    ok = _cli("rules", "check", config=portfolio)
    assert ok.returncode == 0, ok.stderr
    assert "field names: the source query" in ok.stdout


def test_simulate_lists_what_would_be_ordered_and_writes_nothing(
    tmp_path: Path, portfolio: Path
) -> None:
    """simulate shows each home the live rules would order now; no state database is created."""
    result = _cli("simulate", "--format", "jsonl", config=portfolio)
    assert result.returncode == 0, result.stderr
    rows = {r["external_property_id"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(rows) == {"H1", "H2"}
    assert rows["H1"]["rule_id"] == "sfr-full-marketing"
    assert rows["H1"]["services"] == "photos x25, zillow_3d_and_floor_plans x1"
    assert rows["H2"]["services"] == "photos x10"
    assert "2 of 3 home(s) would be ordered now" in result.stderr
    assert not (tmp_path / "state.db").exists()


def test_simulate_with_candidate_rules_shows_gains_and_losses(
    tmp_path: Path, portfolio: Path
) -> None:
    """--rules lists only the homes whose order changes, with the services gained and lost."""
    candidate = tmp_path / "candidate"
    shutil.copytree(REPO / "rules", candidate)
    rule_file = candidate / "readiness.yaml"
    rule = "      - {slug: photos, quantity: 25}\n      - {slug: zillow_3d_and_floor_plans, quantity: 1}\n"
    text = rule_file.read_text()
    assert text.count(rule) == 1
    rule_file.write_text(text.replace(rule, "      - {slug: photos, quantity: 25}\n"))
    result = _cli("simulate", "--rules", str(candidate), "--format", "csv", config=portfolio)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == (
        "external_property_id,live_rule,live_services,candidate_rule,candidate_services,gained,lost"
    )
    assert lines[1:] == [
        'H1,sfr-full-marketing,"photos x25, zillow_3d_and_floor_plans x1",'
        "sfr-full-marketing,photos x25,,zillow_3d_and_floor_plans x1"
    ]
    assert "1 of 3 home(s) would change" in result.stderr


def test_simulate_refuses_a_broken_candidate(tmp_path: Path, portfolio: Path) -> None:
    """A candidate that does not load prints its problems and exits 1."""
    candidate = tmp_path / "bad.yaml"
    candidate.write_text("triggers:\n  t: property.status ==\nrules: []\n")
    result = _cli("simulate", "--rules", str(candidate), config=portfolio)
    assert result.returncode == 1
    assert f"{candidate}:2: trigger 't': CEL syntax error" in result.stderr
    assert "the candidate rules cannot be used" in result.stderr


def test_simulate_one_property_shows_its_trace(portfolio: Path) -> None:
    """--property shows that home's decision and the conditions with the facts they read."""
    result = _cli("simulate", "--property", "H2", config=portfolio)
    assert result.returncode == 0, result.stderr
    assert "attached-homes" in result.stdout
    assert "rule sfr-full-marketing: " in result.stdout
    assert "property_type='condo_townhouse'" in result.stdout
    missing = _cli("simulate", "--property", "NOPE", config=portfolio)
    assert missing.returncode == 1
    assert "no property 'NOPE'" in missing.stderr
