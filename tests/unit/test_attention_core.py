"""The pure parts of attention and notifications: kinds, the audit mapping, timing and wording."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from propready.core.attention import (
    KINDS,
    AttentionItem,
    AttentionKind,
    Silence,
    format_age,
    inhibitor,
    is_overdue,
    parse_duration,
)
from propready.core.audit_kinds import AuditKind
from propready.core.notify_facts import AUDIT_FACT_RULES, AuditRow, fact_from_audit, reason_text
from propready.core.notify_plan import (
    MAX_BODY_CHARS,
    FactView,
    batch_message,
    digest_day_due,
    group_due_at,
    parse_clock,
    retry_delay,
)

T0 = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
DENVER = ZoneInfo("America/Denver")


def row(kind: AuditKind, **detail: object) -> AuditRow:
    return AuditRow(
        id=42,
        at=T0,
        kind=kind.value,
        detail=detail,
        external_property_id="DEN-1",
        external_order_id="pr-1",
    )


def keep(text: str) -> str:
    return text


@pytest.mark.parametrize(
    ("audit_row", "kind"),
    [
        (row(AuditKind.ORDER_CREATED, state="awaiting_approval"), AttentionKind.APPROVAL),
        (
            row(AuditKind.ORDER_CREATED, state="awaiting_approval", held_by="budget ent-1"),
            AttentionKind.BUDGET_HELD,
        ),
        (row(AuditKind.ORDER_CREATED, state="planned"), None),
        (row(AuditKind.ORDER_OUTCOME_UNKNOWN), AttentionKind.UNKNOWN),
        (
            row(AuditKind.ORDER_OUTCOME_AFTER_LEASE_LOST, outcome="order_outcome_unknown"),
            AttentionKind.UNKNOWN,
        ),
        (row(AuditKind.ORDER_OUTCOME_AFTER_LEASE_LOST, outcome="order_placed"), None),
        (row(AuditKind.ORDER_REJECTED), AttentionKind.REJECTED),
        (row(AuditKind.ORDER_NOT_PLANNABLE), AttentionKind.NOT_PLANNABLE),
        (row(AuditKind.SOURCE_ROW_QUARANTINED), AttentionKind.QUARANTINED),
        (row(AuditKind.SENDING_PAUSED, reason="api_key_refused"), AttentionKind.API_KEY_REFUSED),
        (row(AuditKind.SENDING_PAUSED, reason="operator"), None),
        (row(AuditKind.ORDER_CANCELED_BY_VENDOR), AttentionKind.VENDOR_CANCELED),
        (row(AuditKind.ORDER_UNABLE_TO_COMPLETE), AttentionKind.VENDOR_CANCELED),
        (row(AuditKind.WRITEBACK_FAILED), AttentionKind.WRITEBACK_FAILED),
        (row(AuditKind.ORDER_PLACED), None),
    ],
)
def test_the_mapping_table_turns_audit_rows_into_facts(
    audit_row: AuditRow, kind: AttentionKind | None
) -> None:
    """Each audit kind of design 8.3 maps to its notification kind; everything else to none."""
    fact = fact_from_audit(audit_row, keep)
    assert (fact.kind if fact else None) == kind
    if fact is not None:
        assert fact.occurrence == "audit:42"


def test_every_event_kind_has_an_audit_rule_and_states_have_checks() -> None:
    """Each kind is announced by an audit rule, except the two states found by periodic checks."""
    announced = {rule.kind for rule in AUDIT_FACT_RULES}
    assert set(AttentionKind) - announced == {AttentionKind.STUCK, AttentionKind.SOURCE_FAILING}
    assert set(KINDS) == set(AttentionKind)


def test_a_facts_reason_is_made_of_allow_listed_fields_and_scrubbed() -> None:
    """Only reason, column, problems, errors, status and held_by are read; the scrub masks."""
    detail = {
        "status": 400,
        "errors": [{"attr": "postal_code", "message": "invalid SECRET"}],
        "access_code": "4815",
        "payload": {"property_access": {"access_code": "4815"}},
        "facts": {"lockbox": "4815"},
    }
    text = reason_text(detail, lambda text: text.replace("SECRET", "***"))
    assert text == "HTTP 400; postal_code: invalid ***"
    assert reason_text({"access_code": "4815"}, keep) is None


def test_a_group_waits_group_wait_then_at_most_once_per_interval() -> None:
    """The first message waits for late members; later ones wait out the interval."""
    wait, interval = timedelta(seconds=30), timedelta(minutes=5)
    assert group_due_at(T0, None, wait, interval) == T0 + wait
    assert group_due_at(T0, T0 - timedelta(minutes=1), wait, interval) == T0 + timedelta(minutes=4)
    assert group_due_at(T0, T0 - timedelta(hours=1), wait, interval) == T0 + wait


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    """Attempt n waits between half and all of base * 2^(n-1), never more than the cap."""
    rng = random.Random(1)
    for attempts, low, high in ((1, 15, 30), (2, 30, 60), (3, 60, 120), (12, 450, 900)):
        delay = retry_delay(attempts, 30, 900, rng)
        assert low <= delay <= high


def test_a_batch_names_a_few_examples_counts_the_rest_and_stays_short() -> None:
    """300 facts: three examples, "and 297 more", the action, the command and the batch id, in
    fewer than 1,000 characters even with long reasons."""
    views = [
        FactView(f"RM-{n}", f"RM-{n}", None, "column bedrooms: " + "x" * 280) for n in range(3)
    ]
    title, body = batch_message(AttentionKind.QUARANTINED, views, 300, "nb-1")
    assert title == "propready: 300 PM rows quarantined"
    assert body.startswith("300 PM rows quarantined: RM-0, RM-1, RM-2 and 297 more.")
    assert "Command: propready audit --property RM-0 --kind source_row_quarantined" in body
    assert body.endswith("Batch: nb-1")
    assert len(body) <= MAX_BODY_CHARS


def test_one_fact_reads_in_the_singular() -> None:
    """A single order is "1 order waits for approval", with its home."""
    title, body = batch_message(
        AttentionKind.APPROVAL, [FactView("pr-1", "DEN-1", "pr-1")], 1, "nb-2"
    )
    assert title == "propready: 1 order waits for approval"
    assert body.startswith("1 order waits for approval: pr-1 (DEN-1).")
    assert "Command: propready orders approve pr-1" in body


@pytest.mark.parametrize(
    ("utc", "digest_at", "due"),
    [
        ("2026-11-27T14:59", "08:00", None),
        ("2026-11-27T15:00", "08:00", date(2026, 11, 27)),
        # 23:59 on the 27th in Denver: still the 27th's (its tick row stops a second one)
        ("2026-11-28T06:59", "08:00", date(2026, 11, 27)),
        ("2026-03-08T08:59", "02:30", None),  # 01:59 MST; 02:30 never comes that night
        ("2026-03-08T09:00", "02:30", date(2026, 3, 8)),  # 03:00 MDT
        ("2026-11-01T07:30", "01:30", date(2026, 11, 1)),  # the first 01:30 (MDT)
        ("2026-11-27T15:00", "", None),
    ],
)
def test_the_digest_is_due_by_the_source_time_zones_clock(
    utc: str, digest_at: str, due: date | None
) -> None:
    """The digest's day and time are read in the source time zone, DST days included."""
    now = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert digest_day_due(now, DENVER, digest_at) == due


def test_digest_at_must_be_a_time_of_day() -> None:
    """ "8am" and "25:00" are refused; "08:00" is read as (8, 0)."""
    assert parse_clock("08:00") == (8, 0)
    for bad in ("8am", "25:00", "08:0", "08"):
        with pytest.raises(ValueError, match="time of day"):
            parse_clock(bad)


def test_durations_and_ages_read_like_people_write_them() -> None:
    """ "4h", "30m", "2d", "1h30m" parse; ages print as 45s, 12m, 3h 5m, 2d 4h."""
    assert parse_duration("4h") == timedelta(hours=4)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    for bad in ("", "4", "4 hours", "0m"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert format_age(timedelta(seconds=45)) == "45s"
    assert format_age(timedelta(minutes=12)) == "12m"
    assert format_age(timedelta(hours=3, minutes=5)) == "3h 5m"
    assert format_age(timedelta(days=2, hours=4)) == "2d 4h"


def item(kind: AttentionKind, since: datetime, version: str = "v1") -> AttentionItem:
    return AttentionItem(kind, "pr-1", since, "what", version, "DEN-1", "pr-1")


def test_overdue_follows_the_kinds_threshold_and_its_override() -> None:
    """An unknown order is overdue after 4 h by default, after 1 h with an override."""
    unknown = item(AttentionKind.UNKNOWN, T0)
    assert not is_overdue(unknown, T0 + timedelta(hours=3), {})
    assert is_overdue(unknown, T0 + timedelta(hours=4), {})
    assert is_overdue(unknown, T0 + timedelta(hours=1), {"unknown": 1})


def test_an_ack_lasts_until_the_item_changes_and_a_snooze_until_its_end() -> None:
    """Acknowledged: hidden while the version is the same. Snoozed: hidden until `until`."""
    ack = Silence("unknown:pr-1", "ack", "why", "ops", T0, version="v1")
    assert ack.hides(item(AttentionKind.UNKNOWN, T0, "v1"), T0)
    assert not ack.hides(item(AttentionKind.UNKNOWN, T0, "v2"), T0)
    snooze = Silence("unknown:pr-1", "snooze", "why", "ops", T0, until=T0 + timedelta(hours=4))
    assert snooze.hides(item(AttentionKind.UNKNOWN, T0), T0 + timedelta(hours=3))
    assert not snooze.hides(item(AttentionKind.UNKNOWN, T0), T0 + timedelta(hours=4))


def test_a_refused_key_inhibits_the_order_floods_it_causes() -> None:
    """Rejected and unknown orders are inhibited by a refused key; the key itself never is."""
    active = frozenset({AttentionKind.API_KEY_REFUSED})
    assert inhibitor(AttentionKind.REJECTED, active) is AttentionKind.API_KEY_REFUSED
    assert inhibitor(AttentionKind.UNKNOWN, active) is AttentionKind.API_KEY_REFUSED
    assert inhibitor(AttentionKind.API_KEY_REFUSED, active) is None
    assert inhibitor(AttentionKind.REJECTED, frozenset()) is None
