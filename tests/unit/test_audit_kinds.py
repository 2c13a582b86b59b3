"""Audit kinds: one enum that the writers, the CLI and the analyst views all agree on."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from propready.core.audit_kinds import AuditKind

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"
# `x.kind = 'name'` and `x.kind IN ('a', 'b')` in a view's SQL.
KIND_EQUALS = re.compile(r"kind\s*=\s*'([a-z_]+)'")
KIND_IN = re.compile(r"kind\s+IN\s*\(([^)]*)\)", re.IGNORECASE)


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _view_sql() -> list[str]:
    """Every view text the migrations create, rendered for both dialects."""
    texts: list[str] = []
    for path in sorted(MIGRATIONS.glob("*.py")):
        module = _load(path)
        texts.append(path.read_text("utf-8"))
        view_sql = getattr(module, "view_sql", None)
        if view_sql is not None:
            for dialect in (module.POSTGRESQL, module.SQLITE):
                texts.extend(view_sql(dialect).values())
    return texts


def kinds_the_views_match() -> set[str]:
    found: set[str] = set()
    for text in _view_sql():
        found.update(KIND_EQUALS.findall(text))
        for group in KIND_IN.findall(text):
            found.update(re.findall(r"'([a-z_]+)'", group))
    return found


def test_views_match_on_known_kinds_only() -> None:
    """Every kind an analyst view filters on is a member of AuditKind (a typo would match 0 rows)."""
    matched = kinds_the_views_match()
    assert {"order_placed", "order_created", "trigger_fired"} <= matched  # the scan works
    assert matched - {k.value for k in AuditKind} == set()
