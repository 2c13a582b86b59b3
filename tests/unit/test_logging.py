"""Logging: JSON lines off a terminal, and secrets masked by name, by value and in tracebacks."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from propready.log import configure_logging

API_KEY = "pk_live_4f9a77c2e1"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(fmt="auto", level="info", secret_values=[API_KEY], stream=out)
    yield out
    structlog.reset_defaults()


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def test_json_lines_when_not_on_a_terminal(stream: io.StringIO) -> None:
    """A StringIO is not a tty, so each event is one JSON object with level and timestamp."""
    structlog.get_logger().info("cycle", events=3)
    (line,) = _lines(stream)
    assert line["event"] == "cycle"
    assert line["events"] == 3
    assert line["level"] == "info"
    assert "timestamp" in line


def test_secret_fields_and_values_are_masked(stream: io.StringIO) -> None:
    """Fields named like secrets are masked at any depth; the API key is masked inside text."""
    structlog.get_logger().info(
        "request",
        body={"api_key": API_KEY, "property_access": {"access_code": "7391", "vacant": True}},
        note=f"sent with key {API_KEY}",
    )
    text = stream.getvalue()
    assert API_KEY not in text
    assert "7391" not in text
    (line,) = _lines(stream)
    assert line["body"] == {
        "api_key": "***",
        "property_access": {"access_code": "***", "vacant": True},
    }


def test_tracebacks_carry_no_local_variables(stream: io.StringIO) -> None:
    """An exception logged with its traceback shows neither locals nor the key in its message."""

    def send(access_code: str) -> None:
        api_key = API_KEY  # a local that structlog's default tracebacks would print
        raise RuntimeError(f"vendor refused key {api_key}")

    try:
        send("7391")
    except RuntimeError:
        structlog.get_logger().exception("send_failed")
    text = stream.getvalue()
    assert "send_failed" in text
    assert "RuntimeError" in text
    assert API_KEY not in text
    assert "7391" not in text
    assert '"locals"' not in text
