"""Output formats: `--format json` is one array of objects, `jsonl` one object per line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from propready.cli.output import emit

ROWS = [{"id": 1, "at": datetime(2026, 12, 1, tzinfo=UTC), "x": "a"}, {"id": 2, "at": None}]


def test_json_is_one_array_of_objects(capsys: pytest.CaptureFixture[str]) -> None:
    """A program reads the whole list with one json.loads; dates are ISO text."""
    emit(ROWS, ("id", "at"), "json")
    assert json.loads(capsys.readouterr().out) == [
        {"id": 1, "at": "2026-12-01T00:00:00+00:00"},
        {"id": 2, "at": None},
    ]


def test_jsonl_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Each line is an object, for streaming tools."""
    emit(ROWS, ("id",), "jsonl")
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"id": 1},
        {"id": 2},
    ]


def test_an_empty_json_list_is_an_empty_array(capsys: pytest.CaptureFixture[str]) -> None:
    """No rows: `[]`, still valid JSON."""
    emit([], ("id",), "json")
    assert json.loads(capsys.readouterr().out) == []
