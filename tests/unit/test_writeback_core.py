"""The write-back core: its parameters, the statement judge, backoff and give-up, error lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from propready.adapters.writeback_target import parse_statement
from propready.core.writeback import (
    PARAMETER_NAMES,
    RetryPolicy,
    WritebackParams,
    error_line,
    next_attempt_after_failure,
    retry_delay,
    should_audit_failure,
    statement_problem,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(60, 3600, timedelta(hours=48))


def params(**changes: object) -> WritebackParams:
    values: dict[str, object] = {
        "external_property_id": "DEN-1",
        "external_order_id": "pr-1",
        "vendor_order_id": "9001",
        "order_status": "completed",
        "delivered_at": T0,
        "photo_manage_link": "https://media.example/1",
        "zillow_3d_link": None,
        "photo_count": 25,
    }
    values.update(changes)
    return WritebackParams(**values)  # type: ignore[arg-type]


def test_the_params_carry_exactly_the_named_parameters() -> None:
    """The record's fields are the statement's parameters, in the documented order."""
    assert tuple(WritebackParams.__dataclass_fields__) == PARAMETER_NAMES
    assert tuple(params().bind_values(datetime_as_text=True)) == PARAMETER_NAMES


def test_delivered_at_is_kept_in_utc_and_survives_json() -> None:
    """An aware time in another zone is stored as UTC; the JSON form reads back equal."""
    local = datetime(2026, 12, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5)))
    made = params(delivered_at=local)
    assert made.delivered_at == T0
    assert made.delivered_at.tzinfo is UTC
    assert WritebackParams.from_json(made.to_json()) == made
    assert made.bind_values(datetime_as_text=True)["delivered_at"] == "2026-12-01T12:00:00+00:00"
    assert made.bind_values(datetime_as_text=False)["delivered_at"] == T0


@pytest.mark.parametrize(
    "changes",
    [
        {"delivered_at": datetime(2026, 12, 1, 12, 0)},
        {"external_order_id": ""},
        {"photo_count": -1},
        {"photo_count": True},
    ],
)
def test_impossible_params_are_refused(changes: dict[str, object]) -> None:
    """A naive time, a missing id or a negative count cannot be queued."""
    with pytest.raises(ValueError, match=r"must|required"):
        params(**changes)


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        (
            "UPDATE units SET photos_url = :photo_manage_link WHERE unit_id = :external_property_id",
            None,
        ),
        ("INSERT INTO media (order_id, n) VALUES (:external_order_id, :photo_count)", None),
        ("UPDATE units SET note = 'at 12:30' WHERE unit_id = :external_property_id", None),
        ("UPDATE units SET a = :nope WHERE unit_id = :external_property_id", "unknown parameter"),
        ("UPDATE units SET a = 1", "uses none of the named parameters"),
        ("UPDATE units SET a = :photo_count; DELETE FROM units", "single statement"),
        ("-- only a comment\n;", "is empty"),
    ],
)
def test_the_statement_judge(statement: str, problem: str | None) -> None:
    """One statement, only the named parameters, at least one of them."""
    count, names = parse_statement(statement)
    found = statement_problem(names, count)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_backoff_grows_from_base_to_the_cap_with_jitter() -> None:
    """Half to all of base, 2 base, 4 base ... capped; jitter picks within the band."""
    assert retry_delay(1, 60, 3600, 0.0) == 30
    assert retry_delay(1, 60, 3600, 1.0) == 60
    assert retry_delay(3, 60, 3600, 1.0) == 240
    assert retry_delay(30, 60, 3600, 1.0) == 3600
    assert retry_delay(10_000, 60, 3600, 0.5) == 2700  # no overflow on a long outage


def test_give_up_counts_from_the_first_failure_of_the_streak() -> None:
    """A first failure is retried; one 48 h after the streak began gives up (None)."""
    first = next_attempt_after_failure(T0, None, 1, POLICY, 1.0)
    assert first == T0 + timedelta(seconds=60)
    later = T0 + timedelta(hours=47)
    assert next_attempt_after_failure(later, T0, 40, POLICY, 0.0) is not None
    assert next_attempt_after_failure(T0 + timedelta(hours=48), T0, 41, POLICY, 0.0) is None


def test_a_failure_is_audited_when_it_says_something_new() -> None:
    """The first failure, a new reason and the give-up are audited; a repeat is not."""
    assert should_audit_failure(None, "old", "old", False)
    assert not should_audit_failure(T0, "refused", "refused", False)
    assert should_audit_failure(T0, "refused", "no such table", False)
    assert should_audit_failure(T0, "refused", "refused", True)


def test_error_line_is_the_first_line_without_secrets() -> None:
    """The driver's first line only, passwords (given or in a URL) masked, clipped."""
    text = (
        '\n  connection to server at "db" failed: password s3cret for '
        "postgresql://pm:s3cret@db/pm rejected\nDETAIL: more\n"
    )
    line = error_line(text, ["s3cret"])
    assert "s3cret" not in line
    assert "DETAIL" not in line
    assert line.startswith('connection to server at "db" failed')
    assert error_line("x" * 1000).endswith("…")
    assert len(error_line("x" * 1000)) == 300
    assert error_line("") == "no reason given"
