"""Notifications: audit rows and state checks -> facts -> grouped messages -> apprise channels.

One run (the daemon's `notify` job, and every `run --once`) does, in order:

1. scan: under the cursor lock, read the audit rows after the cursor, map them to facts
   (`core.notify_facts`), add the state facts (stuck orders, a source failing for a while) and
   insert them once each. Facts caused by an active refusal of the key or a source outage are
   stored as suppressed (inhibition): the cause is told, not its flood.
2. batch: per (channel, kind) group, under the group's lock, pending facts become one message
   when the group is due (`group_wait` after its first fact, at most one per
   `group_interval`). Snoozed items' facts are passed over.
3. digest: once per local day at `[notify] digest_at` (one tick row; one host sends it).
4. deliver: claim due messages (`SKIP LOCKED` leases) and send each to its one channel; a
   failure is retried with jittered exponential backoff, a channel that failed is not tried
   again in the same run, and the other channels go on.
5. purge (once a day): facts, finished messages and ended snoozes older than the retention.

A crash between sending and recording leaves the message `sending`; when its lease expires it
is sent again: at most one duplicate, carrying the same batch id.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

import sqlalchemy as sa
import structlog

from propready.adapters import notify_channels
from propready.adapters.notify_channels import Channel
from propready.adapters.store import attention as attention_store
from propready.adapters.store import notify as store
from propready.adapters.store import properties
from propready.adapters.store.engine import create_state_engine
from propready.core.attention import KINDS, AttentionKind, inhibitor
from propready.core.notify_facts import (
    WATCHED_AUDIT_KINDS,
    Fact,
    fact_from_audit,
    source_failing_fact,
    stuck_fact,
)
from propready.core.notify_plan import (
    EXAMPLES,
    DigestLine,
    FactView,
    batch_message,
    channel_test_message,
    digest_day_due,
    digest_message,
    group_due_at,
    retry_delay,
)
from propready.log import REDACTOR
from propready.notify_settings import DIGEST
from propready.service.attention import CHECKPOINT, attention_list
from propready.service.components import Components, CycleSummary, crash_point
from propready.settings import Settings

log = structlog.get_logger("propready.notify")

SCAN_BATCH = 5000
SCAN_BATCHES_PER_RUN = 20
SENDS_PER_RUN = 200
NEW_GROUP_LOOKBACK = timedelta(days=1)
LEASE_MARGIN_SECONDS = 30.0
CHANNEL_FAILING_AFTER = timedelta(hours=1)  # /healthz and check complain after this
Observer = Callable[[str, str], None]  # (channel label, "sent" | "failed")


@dataclass
class NotifyRun:
    """What one run did, and the channels failing after it (for health and metrics)."""

    facts: int = 0
    suppressed: int = 0
    messages: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    digest: bool = False
    failing: list[tuple[str, datetime, str | None]] = field(default_factory=list)


@lru_cache(maxsize=128)
def channel_for(url: str) -> Channel | None:
    return notify_channels.parse_channel(url)


def configured_channels(settings: Settings) -> list[Channel]:
    found = (channel_for(url) for url in settings.notify.channel_urls())
    return [channel for channel in found if channel is not None]


def new_batch_id() -> str:
    return "nb-" + secrets.token_hex(8)


def notify_step(
    components: Components,
    now: Callable[[], datetime],
    summary: CycleSummary,
    *,
    observer: Observer | None = None,
) -> NotifyRun:
    """One notification run for the daemon's job and `run --once`; counts go to `summary`."""
    run = run_notifications(
        components.state,
        components.settings,
        components.owner,
        now,
        rng=components.jitter,
        observer=observer,
    )
    summary.notify_facts += run.facts
    summary.notify_sent += run.sent
    summary.notify_failed += run.failed
    return run


def run_notifications(
    state: sa.Engine,
    settings: Settings,
    owner: str,
    now: Callable[[], datetime],
    *,
    rng: random.Random | None = None,
    observer: Observer | None = None,
) -> NotifyRun:
    run = NotifyRun()
    rng = rng or random.Random()
    scan(state, settings, now(), run)
    if settings.notify.channel_urls():
        batch(state, settings, now(), run)
        digest(state, settings, now(), run)
        deliver(state, settings, owner, now, rng, run, observer)
    purge(state, settings, now())
    labels = {channel.key: channel.label for channel in configured_channels(settings)}
    with state.connect() as connection:
        run.failing = [
            (labels.get(f.channel, "a channel no longer configured"), f.failing_since, f.last_error)
            for f in store.failing_channels(connection)
        ]
    return run


# --- 1. scan ----------------------------------------------------------------------------------


def scan(state: sa.Engine, settings: Settings, now: datetime, run: NotifyRun) -> None:
    enabled = frozenset(settings.notify.events)
    with state.begin() as connection:
        cursor = store.lock_cursor(connection)
        if cursor is None:
            return  # another host is scanning right now
        active = _active_causes(connection)
        found: list[tuple[Fact, str | None]] = []
        for _ in range(SCAN_BATCHES_PER_RUN):
            rows, moved = store.audit_rows_after(
                connection, cursor, WATCHED_AUDIT_KINDS, SCAN_BATCH
            )
            for row in rows:
                fact = fact_from_audit(row, REDACTOR.scrub_text)
                if fact is not None and fact.kind in enabled:
                    inhibited_by = inhibitor(fact.kind, active)
                    found.append((fact, inhibited_by.value if inhibited_by else None))
            cursor = moved
            if len(rows) < SCAN_BATCH:
                break
        found.extend(
            (fact, None) for fact in _state_facts(connection, settings, now) if fact.kind in enabled
        )
        new = store.insert_facts(connection, found, now)
        store.save_cursor(connection, cursor, now)
    run.facts += len(new)
    run.suppressed += sum(1 for _, cause in new if cause)
    if new:  # one line per scan: a storm of facts must not become a storm of log lines
        by_kind: dict[str, int] = {}
        for fact, _cause in new:
            by_kind[fact.kind.value] = by_kind.get(fact.kind.value, 0) + 1
        log.info("notification_facts", suppressed=run.suppressed, **by_kind)


def _active_causes(connection: sa.Connection) -> frozenset[AttentionKind]:
    active = set()
    if attention_store.api_key_refusal(connection) is not None:
        active.add(AttentionKind.API_KEY_REFUSED)
    if properties.load_checkpoint(connection, CHECKPOINT).consecutive_failures:
        active.add(AttentionKind.SOURCE_FAILING)
    return frozenset(active)


def _state_facts(connection: sa.Connection, settings: Settings, now: datetime) -> list[Fact]:
    facts = []
    stuck_after = timedelta(hours=settings.notify.stuck_after_hours)
    for stuck in attention_store.stuck_orders(connection, now - stuck_after):
        order = stuck.order
        facts.append(
            stuck_fact(
                order.external_order_id,
                order.external_property_id,
                stuck.last_progress,
                order.vendor_status,
                stuck.last_progress + stuck_after,
            )
        )
    checkpoint = properties.load_checkpoint(connection, CHECKPOINT)
    failures = checkpoint.consecutive_failures
    last_success = checkpoint.last_success_at
    patience = timedelta(minutes=settings.notify.source_failing_after_minutes)
    if failures and (last_success is None or now - last_success >= patience):
        facts.append(
            source_failing_fact(
                last_success, failures, checkpoint.last_error, now, REDACTOR.scrub_text
            )
        )
    return facts


# --- 2. batch ---------------------------------------------------------------------------------


def batch(state: sa.Engine, settings: Settings, now: datetime, run: NotifyRun) -> None:
    wait = timedelta(seconds=settings.notify.group_wait_seconds)
    interval = timedelta(seconds=settings.notify.group_interval_seconds)
    with state.begin() as connection:
        snoozed = [
            silence.item
            for silence in attention_store.silences(connection).values()
            if silence.mode == "snooze" and silence.until is not None and now < silence.until
        ]
        for kind in settings.notify.events:
            quiet = [item.split(":", 1)[1] for item in snoozed if item.startswith(f"{kind}:")]
            for url in settings.notify.urls_for(kind.value):
                channel = channel_for(url)
                if channel is None:
                    continue
                group = store.lock_group(
                    connection, channel.key, kind.value, now - NEW_GROUP_LOOKBACK
                )
                if group is None:
                    continue  # another host is batching this group
                pending = store.pending_facts(
                    connection,
                    kind.value,
                    group.last_fact_id,
                    silenced_subjects=quiet,
                    examples=EXAMPLES,
                )
                if pending.count == 0 or pending.first_noted_at is None:
                    if pending.last_id > group.last_fact_id:
                        store.advance_group(
                            connection, channel.key, kind.value, pending.last_id, None
                        )
                    continue
                if now < group_due_at(
                    pending.first_noted_at, group.last_message_at, wait, interval
                ):
                    continue
                batch_id = new_batch_id()
                views = [
                    FactView(f.subject, f.external_property_id, f.external_order_id, f.reason)
                    for f in pending.examples
                ]
                title, body = batch_message(kind, views, pending.count, batch_id)
                store.insert_message(
                    connection,
                    batch_id=batch_id,
                    channel=channel.key,
                    kind=kind.value,
                    severity=KINDS[kind].severity,
                    title=title,
                    body=body,
                    fact_count=pending.count,
                    now=now,
                )
                store.advance_group(connection, channel.key, kind.value, pending.last_id, now)
                run.messages += 1


# --- 3. digest --------------------------------------------------------------------------------


def digest(state: sa.Engine, settings: Settings, now: datetime, run: NotifyRun) -> None:
    day = digest_day_due(now, settings.source.zone, settings.notify.digest_at)
    urls = settings.notify.urls_for(DIGEST)
    if day is None or not urls:
        return
    with state.connect() as connection:
        if store.tick_taken(connection, DIGEST, day.isoformat()):
            return  # today's digest is made (by this host or another)
    listed = attention_list(state, settings, now)
    lines = []
    for kind in AttentionKind:
        mine = [entry for entry in listed if entry.item.kind is kind]
        if mine:
            lines.append(
                DigestLine(
                    kind,
                    len(mine),
                    max(entry.item.age(now) for entry in mine),
                    sum(1 for entry in mine if entry.overdue),
                )
            )
    overdue = any(entry.overdue for entry in listed)
    # The tick and the messages commit together: exactly one host makes the day's digest, and
    # a crash leaves either both or neither.
    with state.begin() as connection:
        previous = store.last_tick_at(connection, DIGEST)
        if not store.take_tick(connection, DIGEST, day.isoformat(), now):
            return
        since = previous or now - timedelta(days=1)
        told = store.told_since(connection, since)
        failed = store.failed_since(connection, since)
        for url in urls:
            channel = channel_for(url)
            if channel is None:
                continue
            batch_id = new_batch_id()
            title, body = digest_message(day, lines, told, failed, batch_id)
            store.insert_message(
                connection,
                batch_id=batch_id,
                channel=channel.key,
                kind=DIGEST,
                severity="warning" if overdue else "info",
                title=title,
                body=body,
                fact_count=0,
                now=now,
            )
            run.messages += 1
    run.digest = True
    log.info("notification_digest", day=day.isoformat(), items=len(listed))


# --- 4. deliver -------------------------------------------------------------------------------


def deliver(
    state: sa.Engine,
    settings: Settings,
    owner: str,
    now: Callable[[], datetime],
    rng: random.Random,
    run: NotifyRun,
    observer: Observer | None,
) -> None:
    config = settings.notify
    channels = {channel.key: channel for channel in configured_channels(settings)}
    lease = config.timeout_seconds + LEASE_MARGIN_SECONDS
    broken: list[str] = []  # failed in this run: their next messages wait for the next run
    for _ in range(SENDS_PER_RUN):
        with state.begin() as connection:
            message = store.claim_message(connection, owner, now(), lease, skip_channels=broken)
        if message is None:
            return
        channel = channels.get(message.channel)
        if channel is None:
            with state.begin() as connection:
                store.drop_message(connection, message.id, owner, "channel no longer configured")
            run.dropped += 1
            log.warning("notification_dropped", batch=message.batch_id, kind=message.kind)
            continue
        outcome = notify_channels.send(
            channel,
            message.title,
            message.body,
            severity=message.severity,
            batch_id=message.batch_id,
            timeout_seconds=config.timeout_seconds,
        )
        crash_point("notify_after_send")
        at = now()
        with state.begin() as connection:
            if outcome.ok:
                store.record_sent(connection, message.id, owner, at)
            else:
                gave_up = at - message.created_at >= timedelta(hours=config.give_up_after_hours)
                delay = retry_delay(
                    message.attempts, config.retry_base_seconds, config.retry_max_seconds, rng
                )
                store.record_failure(
                    connection,
                    message.id,
                    owner,
                    at,
                    outcome.error or "failed",
                    None if gave_up else at + timedelta(seconds=delay),
                )
        if outcome.ok:
            run.sent += 1
            log.info(
                "notification_sent",
                channel=channel.label,
                kind=message.kind,
                batch=message.batch_id,
                facts=message.fact_count,
                attempt=message.attempts,
            )
        else:
            run.failed += 1
            broken.append(channel.key)
            log.warning(
                "notification_failed",
                channel=channel.label,
                kind=message.kind,
                batch=message.batch_id,
                attempt=message.attempts,
                error=outcome.error,
                gave_up=gave_up,
            )
        if observer is not None:
            observer(channel.label, "sent" if outcome.ok else "failed")


# --- 5. purge ---------------------------------------------------------------------------------


def purge(state: sa.Engine, settings: Settings, now: datetime) -> None:
    day = now.astimezone(settings.source.zone).date().isoformat()
    before = now - timedelta(days=settings.notify.retention_days)
    with state.begin() as connection:
        if not store.take_tick(connection, "purge", day, now):
            return
        removed = store.purge_before(connection, before)
        removed += attention_store.purge_silences(connection, before)
    if removed:
        log.info("notification_purge", rows=removed)


# --- `propready notify test` ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelCheck:
    label: str
    ok: bool
    error: str | None


def send_test(settings: Settings) -> list[ChannelCheck]:
    """Send a test message to every configured channel, directly (not through the outbox)."""
    results = []
    for channel in configured_channels(settings):
        batch_id = new_batch_id()
        title, body = channel_test_message(batch_id)
        outcome = notify_channels.send(
            channel,
            title,
            body,
            severity="info",
            batch_id=batch_id,
            timeout_seconds=settings.notify.timeout_seconds,
        )
        results.append(ChannelCheck(channel.label, outcome.ok, outcome.error))
    return results


def check_lines(settings: Settings, now: datetime) -> list[tuple[str, bool, str]]:
    """`propready check`: the channels apprise accepted, and any channel failing for an hour."""
    channels = configured_channels(settings)
    if not channels:
        return [("notify", True, "no urls: notifications are off")]
    labels = {channel.key: channel.label for channel in channels}
    lines = [("notify", True, f"{len(channels)} channel(s): {', '.join(labels.values())}")]
    engine = create_state_engine(settings.state.url)
    try:
        with engine.connect() as connection:
            failing = store.failing_channels(connection)
    except sa.exc.SQLAlchemyError:
        return lines  # the state line already says what is wrong with the database
    finally:
        engine.dispose()
    for entry in failing:
        if now - entry.failing_since <= CHANNEL_FAILING_AFTER:
            continue
        minutes = int((now - entry.failing_since).total_seconds() // 60)
        lines.append(
            (
                "notify",
                False,
                f"{labels.get(entry.channel, 'a removed channel')} failing for {minutes} min "
                f"({entry.waiting} waiting): {entry.last_error}",
            )
        )
    return lines
