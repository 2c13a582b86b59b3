"""Rendering rows for people (a table) or programs (one JSON array, JSON lines, CSV)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

# json: one array of objects; jsonl: one object per line (design.md 8.5).
FORMATS = ("table", "json", "jsonl", "csv")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, sort_keys=True)
    return str(_plain(value))


def emit(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str, title: str = ""
) -> None:
    if fmt == "json":
        objects = [{c: _plain(row.get(c)) for c in columns} for row in rows]
        sys.stdout.write(json.dumps(objects, default=str) + "\n")
        return
    if fmt == "jsonl":
        for row in rows:
            sys.stdout.write(
                json.dumps({c: _plain(row.get(c)) for c in columns}, default=str) + "\n"
            )
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
        return
    table = Table(title=title or None, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console(width=max(120, Console().width)).print(table)
