"""The rule key on_vendor_cancel: reorder | notify (default notify), checked like every key."""

from __future__ import annotations

import pytest

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import RuleFileError, parse_rule_files

CATALOG = load_catalog()
RULE = """\
triggers:
  ready: property.status == "Vacant Unrented Ready"
rules:
  - id: sfr
    triggered_by: [ready]
    services:
      - {slug: photos, quantity: 25}
"""


def test_default_is_notify_and_reorder_is_read() -> None:
    (rule,) = parse_rule_files([("r.yaml", RULE)], CATALOG).rules
    assert rule.on_vendor_cancel == "notify"
    text = RULE + "    on_vendor_cancel: reorder\n"
    (rule,) = parse_rule_files([("r.yaml", text)], CATALOG).rules
    assert rule.on_vendor_cancel == "reorder"


def test_another_value_is_refused_with_file_line_and_the_choices() -> None:
    text = RULE + "    on_vendor_cancel: retry\n"
    with pytest.raises(RuleFileError) as caught:
        parse_rule_files([("r.yaml", text)], CATALOG)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith("r.yaml:8")
    assert "on_vendor_cancel" in problem
    assert "expected 'reorder' or 'notify', got the text 'retry'" in problem
