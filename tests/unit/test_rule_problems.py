"""`rules check` reports every problem of every rule at once, and refuses empty conditions."""

from __future__ import annotations

from pathlib import Path

import pytest

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import RuleFileError, load_rule_set, parse_rule_files

CATALOG = load_catalog()
FIELDS = frozenset({"external_property_id", "status", "bedrooms"})

TWO_BROKEN_RULES = """\
triggers:
  ready: property.status == "Ready"
rules:
  - id: a
    triggered_by: [ready, nope]
    colour: red
    services:
      - {slug: photos, quantity: 12}
  - id: b
    triggered_by: [ready]
    when: "property.bedrooms >"
    priority: "x"
    services:
      - {slug: drone_video, quantity: 1}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        parse_rule_files([("r.yaml", text)], CATALOG, FIELDS)
    return [str(p) for p in caught.value.problems]


def test_a_rule_with_a_bad_key_still_reports_its_other_problems() -> None:
    """An unknown key no longer hides the rule's unknown trigger, bad quantity or CEL error."""
    found = problems(TWO_BROKEN_RULES)
    assert "r.yaml:6: rule 'a': colour: unknown field" in found
    assert "r.yaml:5: rule 'a': unknown trigger 'nope' (known: ready)" in found
    assert (
        "r.yaml:8: rule 'a': photos does not accept quantity 12 (allowed: 10, 15, 20, 25)" in found
    )
    assert "r.yaml:12: rule 'b': priority: expected a number, got the text 'x'" in found
    assert any(p.startswith("r.yaml:11: rule 'b': when: CEL syntax error") for p in found)
    assert any(p.startswith("r.yaml:14: rule 'b': service 'drone_video' is not in") for p in found)
    assert len(found) == 6


@pytest.mark.parametrize("when", ['""', '"   "'])
def test_an_empty_when_is_refused_with_its_line(when: str) -> None:
    """`when: ""` would match every home; it is refused, not read as 'no condition'."""
    text = (
        "triggers:\n  ready: property.status == 'Ready'\nrules:\n  - id: a\n"
        f"    triggered_by: [ready]\n    when: {when}\n    services: [{{slug: photos, quantity: 10}}]\n"
    )
    assert problems(text) == [
        "r.yaml:6: rule 'a': when is empty; write a condition, or leave `when` out for a rule "
        "that orders every time its triggers fire"
    ]


@pytest.mark.parametrize("condition", ['""', "' '"])
def test_an_empty_trigger_is_refused_with_its_line(condition: str) -> None:
    """A trigger without a condition is refused with file:line, not a CEL parser message."""
    text = f"triggers:\n  ready: property.status == 'Ready'\n  empty: {condition}\nrules: []\n"
    assert problems(text) == ["r.yaml:3: trigger 'empty': the condition is empty"]


def test_rule_paths_that_cannot_be_used_say_why(tmp_path: Path) -> None:
    """A missing path, an empty folder and a file that is not YAML each get one clear reason."""
    not_yaml = tmp_path / "propready.toml"
    not_yaml.write_text("[state]\n")
    cases = {
        tmp_path / "missing": f"rules.path: {tmp_path / 'missing'} does not exist",
        tmp_path: f"rules.path: no *.yaml rule files in {tmp_path}",
        not_yaml: f"rules.path: {not_yaml} is not a .yaml rule file or a folder of them",
    }
    for path, reason in cases.items():
        with pytest.raises(RuleFileError) as caught:
            load_rule_set(path, CATALOG)
        assert [p.reason for p in caught.value.problems] == [reason]
