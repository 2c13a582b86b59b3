"""Notifications end to end: audit rows -> facts -> grouped messages -> real loopback receivers."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from propready.adapters.store import attention as attention_store
from propready.adapters.store import audit
from propready.adapters.store import notify as store
from propready.adapters.store.audit_chain import append_sqlite
from propready.adapters.store.schema import audit_log
from propready.core.attention import Silence
from propready.core.audit_kinds import AuditKind
from propready.log import REDACTOR
from propready.runtime.health import HealthTracker
from propready.runtime.metrics import DaemonMetrics
from propready.service.notify import check_lines, run_notifications
from propready.settings import Settings
from tests.integration.notify_support import JsonReceiver, SmtpReceiver

T0 = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def notify_settings(state_url: str, urls: list[str], **notify: Any) -> Settings:
    notify.setdefault("digest_at", "")
    notify.setdefault("group_wait_seconds", 0)
    notify.setdefault("retry_base_seconds", 10)
    notify.setdefault("timeout_seconds", 5)
    return Settings(
        state={"url": state_url},
        source={"url": "sqlite:///unused.db", "query": "SELECT 1", "timezone": "America/Denver"},
        notify={"urls": urls, **notify},
    )


def record(engine: sa.Engine, kind: AuditKind, at: datetime, **values: Any) -> None:
    with engine.begin() as connection:
        audit.record(connection, kind, at, **values)


def unknown_order(engine: sa.Engine, n: int, at: datetime = T0) -> None:
    record(
        engine,
        AuditKind.ORDER_OUTCOME_UNKNOWN,
        at,
        external_property_id=f"DEN-{n:05d}",
        external_order_id=f"pr-{n:04d}",
        order_id=n,
        detail={"state": "unknown", "reason": "HTTP 502 from PlanOmatic", "attempts": 1},
    )


def run(engine: sa.Engine, settings: Settings, now: datetime, owner: str = "host-a") -> Any:
    return run_notifications(engine, settings, owner, lambda: now, rng=random.Random(7))


@pytest.fixture
def receiver() -> Iterator[JsonReceiver]:
    server = JsonReceiver()
    yield server
    server.close()


def test_unknown_orders_are_told_once_in_one_grouped_message(
    state_engine: sa.Engine, state_url: str, receiver: JsonReceiver
) -> None:
    """Three orders entering `unknown` make one message naming them, with a batch id; a second
    run tells nothing again."""
    settings = notify_settings(state_url, [receiver.url()])
    for n in (1, 2, 3):
        unknown_order(state_engine, n)
    result = run(state_engine, settings, T0)
    assert (result.facts, result.messages, result.sent) == (3, 1, 1)
    [message] = receiver.received
    assert message["title"] == "propready: 3 orders may or may not exist at PlanOmatic (unknown)"
    assert "pr-0001 (DEN-00001), pr-0002 (DEN-00002), pr-0003 (DEN-00003)." in message["message"]
    assert "propready orders resolve pr-0001" in message["message"]
    assert message["batch"].startswith("nb-")
    assert f"Batch: {message['batch']}" in message["message"]
    assert message["type"] == "failure"
    again = run(state_engine, settings, T0 + timedelta(hours=1))
    assert (again.facts, again.messages, again.sent) == (0, 0, 0)
    assert len(receiver.received) == 1


def quarantine(connection: sa.Connection, n: int, at: datetime) -> None:
    audit.record(
        connection,
        AuditKind.SOURCE_ROW_QUARANTINED,
        at,
        external_property_id=f"RM-{n}",
        detail={"column": "bedrooms", "reason": f"'x{n}' is not a whole number"},
    )


def test_a_channel_down_then_up_loses_nothing_and_doubles_nothing(
    state_engine: sa.Engine, state_url: str, receiver: JsonReceiver
) -> None:
    """While one channel answers 503 its messages wait and retry with backoff, the other channel
    is served at once; when it is back every fact arrives once, none twice."""
    healthy = JsonReceiver()
    try:
        settings = notify_settings(state_url, [receiver.url(), healthy.url()])
        receiver.down = True
        for n in (1, 2):
            unknown_order(state_engine, n)
        first = run(state_engine, settings, T0)
        assert (first.sent, first.failed) == (1, 1)
        assert len(healthy.received) == 1
        assert receiver.refused == 1
        # Not due again yet (backoff 5-10 s): nothing is tried.
        assert run(state_engine, settings, T0 + timedelta(seconds=4)).failed == 0
        later = run(state_engine, settings, T0 + timedelta(seconds=11))
        assert (later.failed, receiver.refused) == (1, 2)
        unknown_order(state_engine, 3, T0 + timedelta(seconds=20))
        receiver.down = False
        run(state_engine, settings, T0 + timedelta(seconds=30))  # retry due; group 2 not yet
        run(state_engine, settings, T0 + timedelta(minutes=10))
        run(state_engine, settings, T0 + timedelta(minutes=20))
        told = "\n".join(receiver.texts())
        for order in ("pr-0001", "pr-0002", "pr-0003"):
            assert told.count(f"{order} (DEN-") == 1, told
        assert len(receiver.received) == 2
        assert len({m["batch"] for m in receiver.received}) == 2
        assert len(healthy.received) == 2
    finally:
        healthy.close()


def test_a_storm_of_5000_events_makes_a_bounded_number_of_messages(
    state_engine: sa.Engine, state_url: str, receiver: JsonReceiver
) -> None:
    """5,000 quarantined rows and 100 unknown orders in a burst, then 5,000 more: each group sends
    at most once per group interval, with a count and a few examples."""
    settings = notify_settings(
        state_url, [receiver.url()], group_wait_seconds=30, group_interval_seconds=300
    )
    with state_engine.begin() as connection, audit.buffered(connection):
        for n in range(5000):
            quarantine(connection, n, T0)
        for n in range(100):
            audit.record(
                connection,
                AuditKind.ORDER_OUTCOME_UNKNOWN,
                T0,
                external_property_id=f"DEN-{n}",
                external_order_id=f"pr-{n}",
                detail={"reason": "timeout"},
            )
    assert run(state_engine, settings, T0).facts == 5100
    assert receiver.received == []  # group_wait: late members may still come
    run(state_engine, settings, T0 + timedelta(seconds=31))
    titles = sorted(m["title"] for m in receiver.received)
    assert titles == [
        "propready: 100 orders may or may not exist at PlanOmatic (unknown)",
        "propready: 5000 PM rows quarantined",
    ]
    quarantined = next(m for m in receiver.received if "quarantined" in m["title"])
    assert "RM-0, RM-1, RM-2 and 4997 more." in quarantined["message"]
    assert len(quarantined["message"]) <= 1000  # Teams Workflows' limit
    with state_engine.begin() as connection, audit.buffered(connection):
        for n in range(5000, 10000):
            quarantine(connection, n, T0 + timedelta(minutes=1))
    for seconds in range(40, 660, 10):  # the daemon's job every 10 s for ten minutes
        run(state_engine, settings, T0 + timedelta(seconds=seconds))
    # Two kinds x one channel: at most one message per group per interval.
    assert len(receiver.received) == 3
    assert receiver.received[-1]["title"] == "propready: 5000 PM rows quarantined"


def test_facts_caused_by_a_refused_key_are_suppressed_not_told(
    state_engine: sa.Engine, state_url: str, receiver: JsonReceiver
) -> None:
    """While PlanOmatic refuses the API key, the refusal is told and the rejected orders it
    causes are recorded as suppressed instead of flooding the channel."""
    settings = notify_settings(state_url, [receiver.url()])
    record(state_engine, AuditKind.SENDING_PAUSED, T0, detail={"reason": "api_key_refused"})
    for n in range(20):
        record(
            state_engine,
            AuditKind.ORDER_REJECTED,
            T0,
            external_property_id=f"DEN-{n}",
            external_order_id=f"pr-{n}",
            detail={"status": 401, "errors": [{"attr": "api_key", "message": "unauthorized"}]},
        )
    result = run(state_engine, settings, T0)
    assert (result.facts, result.suppressed) == (21, 20)
    assert [m["title"] for m in receiver.received] == [
        "propready: PlanOmatic refused the API key: sending is paused"
    ]


def test_a_snoozed_item_is_a_silence_for_its_facts(
    state_engine: sa.Engine, state_url: str, receiver: JsonReceiver
) -> None:
    """Facts about a snoozed item are not told while the snooze lasts; others are."""
    settings = notify_settings(state_url, [receiver.url()])
    with state_engine.begin() as connection:
        attention_store.save_silence(
            connection,
            Silence(
                "unknown:pr-0001", "snooze", "asked support", "ops", T0, T0 + timedelta(hours=4)
            ),
        )
    unknown_order(state_engine, 1)
    unknown_order(state_engine, 2)
    run(state_engine, settings, T0)
    [message] = receiver.received
    assert "pr-0002" in message["message"]
    assert "pr-0001" not in message["message"]


def _raw_audit(connection: sa.Connection, kind: str, at: datetime, **values: Any) -> None:
    """An audit row written without record()'s masking: a source that leaked a secret."""
    row = {
        "at": at,
        "kind": kind,
        "external_property_id": None,
        "trigger_name": None,
        "rule_id": None,
        "rules_version": None,
        "event_id": None,
        "order_id": None,
        "external_order_id": None,
        "host": "test",
        "detail": {},
        **values,
    }
    if connection.dialect.name == "postgresql":
        connection.execute(audit_log.insert(), [row])
    else:
        append_sqlite(connection, row)


API_KEY = "sk-live-9f8e7d6c5b4a3921"
ACCESS_CODE = "48151623"


def test_no_secret_reaches_a_message(
    state_engine: sa.Engine, state_url: str, receiver: JsonReceiver
) -> None:
    """With the API key and an access code in the facts' audit rows, and a mail password in the
    channel URL, no received message (webhook or e-mail) carries any of them."""
    smtp = SmtpReceiver("m41l-p4ssw0rd")
    try:
        settings = notify_settings(state_url, [receiver.url(), smtp.url()])
        settings = settings.model_copy(
            update={
                "planomatic": settings.planomatic.model_copy(update={"api_key": SecretStr(API_KEY)})
            }
        )
        REDACTOR.add_values(settings.secret_values())  # as the daemon does at start
        with state_engine.begin() as connection:
            _raw_audit(
                connection,
                "order_rejected",
                T0,
                external_property_id="DEN-1",
                external_order_id="pr-1",
                detail={
                    "status": 400,
                    "errors": [{"attr": "api_key", "message": f"key {API_KEY} is not valid"}],
                    "access_code": ACCESS_CODE,
                    "payload": {"property_access": {"access_code": ACCESS_CODE}},
                },
            )
            _raw_audit(
                connection,
                "order_not_plannable",
                T0,
                external_property_id="DEN-2",
                detail={
                    "problems": ["lockbox_location is required"],
                    "facts": {"lockbox": ACCESS_CODE},
                },
            )
        run(state_engine, settings, T0)
        texts = (
            receiver.texts() + smtp.texts() + [raw.decode("utf-8", "replace") for raw in smtp.raw]
        )
        assert len(receiver.received) == 2
        assert len(smtp.messages) == 2
        assert any("api_key: key *** is not valid" in text for text in texts)
        for text in texts:
            assert API_KEY not in text
            assert ACCESS_CODE not in text
            assert "m41l-p4ssw0rd" not in text
    finally:
        smtp.close()


CRASH_SCRIPT = """
import sys
from datetime import datetime
from propready.adapters.store.engine import create_state_engine
from propready.service.notify import run_notifications
from propready.settings import Settings

state_url, url = sys.argv[1], sys.argv[2]
settings = Settings(
    state={"url": state_url},
    source={"url": "sqlite:///unused.db", "query": "SELECT 1"},
    notify={"urls": [url], "digest_at": "", "group_wait_seconds": 0, "timeout_seconds": 5},
)
now = datetime.fromisoformat(sys.argv[3])
run_notifications(create_state_engine(state_url), settings, "crashing-host", lambda: now)
"""


def test_sigkill_between_send_and_record_duplicates_at_most_once_with_the_same_batch_id(
    state_engine: sa.Engine, state_url: str, receiver: JsonReceiver
) -> None:
    """A process killed after the channel took a message and before recording it: once its
    lease expires the message is sent again, exactly once more, with the same batch id."""
    unknown_order(state_engine, 1)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, state_url, receiver.url(), T0.isoformat()],
        env={**os.environ, "PROPREADY_CRASH_AT": "notify_after_send"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == -9, crashed.stderr
    assert len(receiver.received) == 1
    settings = notify_settings(state_url, [receiver.url()])
    assert run(state_engine, settings, T0 + timedelta(seconds=10)).sent == 0  # lease still held
    assert run(state_engine, settings, T0 + timedelta(minutes=5)).sent == 1
    run(state_engine, settings, T0 + timedelta(minutes=30))
    assert len(receiver.received) == 2
    first, second = receiver.received
    assert first["batch"] == second["batch"]
    assert first["message"] == second["message"]


@pytest.mark.postgres
def test_two_hosts_on_one_postgresql_tell_each_fact_once(
    pg_state_url: str, receiver: JsonReceiver
) -> None:
    """Two dispatchers running at once on one PostgreSQL database, while facts keep arriving:
    every fact is in exactly one message, and no message is sent twice."""
    from propready.adapters.store.engine import create_state_engine

    engine = create_state_engine(pg_state_url)
    settings = notify_settings(pg_state_url, [receiver.url()], group_interval_seconds=0)
    stop = threading.Event()
    errors: list[BaseException] = []
    clock = {"now": T0}

    def host(owner: str) -> None:
        try:
            while not stop.is_set():
                run_notifications(engine, settings, owner, lambda: clock["now"])
        except BaseException as exc:
            errors.append(exc)

    hosts = [threading.Thread(target=host, args=(f"host-{n}",)) for n in range(2)]
    for thread in hosts:
        thread.start()
    try:
        for n in range(120):
            unknown_order(engine, n)
            if n % 3 == 0:
                with engine.begin() as connection:
                    quarantine(connection, n, T0)
            clock["now"] += timedelta(seconds=1)
    finally:
        clock["now"] += timedelta(minutes=5)
        threading.Event().wait(2.0)
        stop.set()
        for thread in hosts:
            thread.join(timeout=60)
    assert errors == []
    run(engine, settings, clock["now"] + timedelta(minutes=5))
    with engine.connect() as connection:
        sent = store.messages(connection)
        facts = store.count_facts(connection)
    engine.dispose()
    assert facts == 160
    assert all(m.state == "sent" for m in sent)
    assert sum(m.fact_count for m in sent) == 160  # no fact in two messages, none left out
    # Each message reached the channel; a second copy is only ever the retry of an attempt whose
    # answer came too late (a loaded machine), recognisable by its batch id: never a new message.
    assert {m["batch"] for m in receiver.received} == {m.batch_id for m in sent}
    retried = {m.batch_id for m in sent if m.attempts > 1}
    copies = Counter(m["batch"] for m in receiver.received)
    assert all(count == 1 or batch in retried for batch, count in copies.items())


def test_a_channel_failing_for_an_hour_is_reported_by_health_metrics_and_check(
    state_engine: sa.Engine, state_url: str, receiver: JsonReceiver
) -> None:
    """A channel that keeps refusing: after an hour /healthz names it, the failing-seconds gauge
    and the failed counter say so, and `check` prints a FAIL line; secrets stay out."""
    url = receiver.url(extra="?+X-Token=s3cr3t-t0ken-v4lue")
    settings = notify_settings(state_url, [url])
    receiver.down = True
    metrics = DaemonMetrics()
    health = HealthTracker(T0, poll_stale_after=timedelta(days=9))
    unknown_order(state_engine, 1)
    for minutes in (0, 20, 40, 61):
        now = T0 + timedelta(minutes=minutes)
        result = run_notifications(
            state_engine, settings, "host-a", lambda now=now: now, observer=metrics.notification
        )
        health.set_failing_channels(result.failing)
        metrics.set_failing_channels(result.failing, now)
        if minutes == 40:
            assert health.report(now).healthy
    report = health.report(T0 + timedelta(minutes=61))
    assert not report.healthy
    [problem] = report.problems
    assert problem.startswith(
        f"notification channel json://127.0.0.1:{receiver.port}/hook failing for 61 min"
    )
    label = f"json://127.0.0.1:{receiver.port}/hook"
    registry = metrics.registry
    assert (
        registry.get_sample_value(
            "propready_notifications_total", {"channel": label, "outcome": "failed"}
        )
        == 4
    )
    assert (
        registry.get_sample_value("propready_notify_channel_failing_seconds", {"channel": label})
        == 3660
    )
    lines = check_lines(settings, T0 + timedelta(minutes=61))
    assert lines[0] == ("notify", True, f"1 channel(s): {label}")
    assert lines[1][1] is False
    assert "failing for 61 min (1 waiting)" in lines[1][2]
    everything = repr(report.as_dict()) + repr(lines) + repr(list(registry.collect()))
    assert "s3cr3t-t0ken-v4lue" not in everything


def not_plannable(engine: sa.Engine, home: str, at: datetime) -> None:
    record(
        engine,
        AuditKind.ORDER_NOT_PLANNABLE,
        at,
        external_property_id=home,
        detail={"problems": ["street is required"]},
    )


def digests(receiver: JsonReceiver) -> list[dict[str, Any]]:
    return [m for m in receiver.received if m["title"].startswith("propready daily digest")]


def test_the_daily_digest_comes_once_a_day_at_digest_at_in_the_source_time_zone(
    state_engine: sa.Engine, state_url: str, receiver: JsonReceiver
) -> None:
    """At 08:00 in America/Denver (15:00 UTC in November) one digest lists what waits, with ages
    and overdue counts; not before, not twice that day, and again the next day."""
    settings = notify_settings(
        state_url, [receiver.url()], digest_at="08:00", events=["quarantined"]
    )
    not_plannable(state_engine, "DEN-7", T0 - timedelta(days=2))
    run(state_engine, settings, datetime(2026, 11, 27, 14, 59, tzinfo=UTC))
    assert digests(receiver) == []
    run(state_engine, settings, datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
    run(state_engine, settings, datetime(2026, 11, 27, 15, 30, tzinfo=UTC))
    [digest] = digests(receiver)
    assert digest["title"] == (
        "propready daily digest 2026-11-27: 1 item(s) wait for a person, 1 overdue"
    )
    assert "1 ready home could not be ordered (oldest 2d, 1 overdue)" in digest["message"]
    assert digest["type"] == "warning"
    run(state_engine, settings, datetime(2026, 11, 28, 15, 1, tzinfo=UTC))
    assert [d["title"][:34] for d in digests(receiver)] == [
        "propready daily digest 2026-11-27:",
        "propready daily digest 2026-11-28:",
    ]


@pytest.mark.parametrize(
    ("digest_at", "before", "at", "repeat"),
    [
        # Clocks go back on 2026-11-01: 01:30 happens twice (MDT, then MST); one digest.
        ("01:30", "2026-11-01T07:29", "2026-11-01T07:30", "2026-11-01T08:30"),
        # Clocks go forward on 2026-03-08: 02:30 never happens; the digest comes at 03:00 MDT.
        ("02:30", "2026-03-08T08:59", "2026-03-08T09:00", "2026-03-08T10:00"),
    ],
    ids=["fall_back", "spring_forward"],
)
def test_the_digest_on_a_dst_day_comes_once(
    state_engine: sa.Engine,
    state_url: str,
    receiver: JsonReceiver,
    digest_at: str,
    before: str,
    at: str,
    repeat: str,
) -> None:
    """On the days clocks change in the source time zone the digest comes exactly once."""
    settings = notify_settings(state_url, [receiver.url()], digest_at=digest_at)
    for moment in (before, at, repeat):
        run(state_engine, settings, datetime.fromisoformat(moment).replace(tzinfo=UTC))
        if moment == before:
            assert digests(receiver) == []
    [digest] = digests(receiver)
    assert digest["title"] == (f"propready daily digest {at[:10]}: nothing waits for a person")


def test_stuck_orders_and_a_failing_source_are_states_told_once_per_episode(
    state_url: str, pm: Any, sandbox: Any, receiver: JsonReceiver
) -> None:
    """A placed order with no vendor progress for stuck_after_hours, and polls failing for
    source_failing_after_minutes, are each told once per episode and listed for a person."""
    from propready.service import run_cycle
    from propready.service.attention import attention_list
    from propready.service.checkpoints import record_source_failure
    from tests.integration.cycle_support import Clock, make_settings, wired

    clock = Clock(T0)
    settings = make_settings(state_url, pm.url, sandbox.url)
    settings = settings.model_copy(
        update={
            "notify": notify_settings(
                state_url,
                [receiver.url()],
                stuck_after_hours=72,
                events=["stuck", "source_failing"],
            ).notify
        }
    )
    with wired(settings) as parts:
        run_cycle(parts, clock)
        pm.set("H1", status="Vacant Unrented Ready")
        clock.now += timedelta(minutes=5)
        run_cycle(parts, clock)  # placed at the sandbox
        engine = parts.state
        assert run(engine, settings, T0 + timedelta(hours=72)).facts == 0
        assert run(engine, settings, T0 + timedelta(hours=73)).facts == 1
        assert run(engine, settings, T0 + timedelta(hours=74)).facts == 0  # same episode
        record_source_failure(parts, "connection refused", T0 + timedelta(hours=74))
        # last success at T0 + 5 min: failing for far longer than 15 minutes.
        assert run(engine, settings, T0 + timedelta(hours=74, minutes=1)).facts == 1
        assert run(engine, settings, T0 + timedelta(hours=75)).facts == 0
        titles = sorted(m["title"] for m in receiver.received)
        assert titles == [
            "propready: 1 order has no progress at PlanOmatic",
            "propready: PM database cannot be read",
        ]
        stuck = next(m for m in receiver.received if "progress" in m["title"])
        assert "PlanOmatic status new_request since 2026-11-27 15:05Z" in stuck["message"]
        kinds = [
            e.item.kind.value for e in attention_list(engine, settings, T0 + timedelta(hours=75))
        ]
        assert sorted(kinds) == ["source_failing", "stuck"]
