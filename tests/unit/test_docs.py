"""The README's payload-columns block is generated from the planner's table and kept in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from propready.core.payload_columns import PAYLOAD_COLUMNS
from propready.docs import BEGIN, END, DocsError, main, with_generated_block

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_matches_the_planners_table() -> None:
    """README.md holds exactly what `make docs` would write; edit the table, then run it."""
    text = README.read_text("utf-8")
    assert with_generated_block(text) == text, "README.md is stale: run `make docs`"


def test_every_column_the_planner_reads_is_documented() -> None:
    """Each payload column appears in the README with its name and where it goes."""
    block = README.read_text("utf-8").split(BEGIN)[1].split(END)[0]
    for column in PAYLOAD_COLUMNS:
        assert f"| `{column.name}` |" in block
        assert f"`{column.path}`" in block


def test_check_mode_fails_on_a_stale_readme(tmp_path: Path) -> None:
    """`python -m propready.docs --check` exits 1 on a stale copy; a run fixes it."""
    stale = tmp_path / "README.md"
    stale.write_text(f"intro\n{BEGIN}\n| old | table |\n{END}\nrest\n")
    assert main([str(stale), "--check"]) == 1
    assert main([str(stale)]) == 0
    assert main([str(stale), "--check"]) == 0
    assert stale.read_text().startswith("intro\n")
    assert stale.read_text().endswith("rest\n")


def test_a_readme_without_the_markers_is_refused() -> None:
    """Without the two markers nothing is written."""
    with pytest.raises(DocsError):
        with_generated_block("no markers here")
