"""The layers hold: the pure core imports no I/O library and nothing outside the core."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "daemon" / "propready" / "core"
# What the core may import: the standard library's pure parts, CEL, and the core itself.
ALLOWED = {
    "__future__", "collections", "dataclasses", "datetime", "decimal", "enum", "functools",
    "hashlib", "json", "math", "random", "re", "types", "typing", "zoneinfo", "cel",
    "propready.core", "itertools", "string", "heapq", "bisect", "calendar", "operator",
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _allowed(name: str) -> bool:
    return any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED)


def test_the_core_imports_no_io_and_nothing_outside_itself() -> None:
    """core/ may not import sqlalchemy, httpx, os, the adapters, the service layer or the CLI."""
    offenders = {
        f"{path.name}: {name}"
        for path in sorted(CORE.glob("*.py"))
        for name in _imports(path)
        if not _allowed(name)
    }
    assert offenders == set()
