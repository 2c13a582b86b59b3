"""The corpus of broken rule files: each is refused with its specific file:line: message.

Every file in tests/rules_corpus/ starts with `# expect: LINE: MESSAGE`; loading it must report
a problem that starts with `FILE:LINE: MESSAGE`. Field names are checked against CORPUS_FIELDS,
as if the source query returned exactly those columns.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import RuleFileError, load_rule_set

CORPUS = Path(__file__).resolve().parents[1] / "rules_corpus"
CORPUS_FIELDS = frozenset(
    "external_property_id status street city state postal_code property_type bedrooms "
    "construction_final_date method_of_access access_code lockbox_location onsite_contact_name "
    "onsite_contact_phone vacant billing_entity_slug market".split()
)
CATALOG = load_catalog()
FILES = sorted(CORPUS.glob("*.yaml"))


def _expectation(path: Path) -> tuple[int, str]:
    first = path.read_text("utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} has no '# expect:' first line"
    line, _, message = first.removeprefix("# expect: ").partition(": ")
    return int(line), message


def test_the_corpus_holds_at_least_thirty_broken_files() -> None:
    """The issue asks for at least 30 broken rule files, each with its expected message."""
    assert len(FILES) >= 30
    assert len({_expectation(f)[1] for f in FILES}) == len(FILES)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_broken_rule_file_is_refused_with_its_message(path: Path) -> None:
    """Loading the file fails, and one problem is exactly at the expected line with the message."""
    line, message = _expectation(path)
    with pytest.raises(RuleFileError) as caught:
        load_rule_set(path, CATALOG, known_fields=CORPUS_FIELDS)
    problems = [str(p) for p in caught.value.problems]
    assert any(p.startswith(f"{path}:{line}: {message}") for p in problems), problems
