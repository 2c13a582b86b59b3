"""Notification timing and wording: when a group is due, how retries back off, what a message says.

Grouping follows Alertmanager: facts of one kind for one channel form a group; the group's first
message waits `group_wait` so that a burst arrives as one message, later ones come at most once
per `group_interval`. A message names a few examples and counts the rest ("300 PM rows
quarantined: RM-1, RM-7, RM-9 and 297 more"); its body stays under Teams Workflows' 1,000
characters, because apprise does not trim it. Messages are made of allow-listed fields only.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from propready.core.attention import KINDS, AttentionKind, command_for, format_age

MAX_BODY_CHARS = 900
EXAMPLES = 3
LIST_COMMAND = "propready attention"


@dataclass(frozen=True, slots=True)
class FactView:
    """What a message may show of one fact."""

    subject: str
    external_property_id: str | None = None
    external_order_id: str | None = None
    reason: str | None = None

    @property
    def label(self) -> str:
        if self.external_order_id and self.external_property_id:
            return f"{self.external_order_id} ({self.external_property_id})"
        return self.external_order_id or self.external_property_id or self.subject


def group_due_at(
    first_pending: datetime,
    last_message_at: datetime | None,
    wait: timedelta,
    interval: timedelta,
) -> datetime:
    """When a group with pending facts may send: `wait` after its first pending fact, and not
    before `interval` after its previous message."""
    due = first_pending + wait
    if last_message_at is not None:
        due = max(due, last_message_at + interval)
    return due


def retry_delay(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Jittered exponential backoff in seconds: half to all of base, 2 base, 4 base, ... (cap)."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return rng.uniform(ceiling / 2, ceiling)


def batch_message(
    kind: AttentionKind, examples: Sequence[FactView], count: int, batch_id: str
) -> tuple[str, str]:
    """Title and body for `count` facts of one kind, naming the first `examples`."""
    info = KINDS[kind]
    single_subject = info.subject in ("api_key", "source")
    if single_subject or count == 1:
        headline = info.one[0].upper() + info.one[1:] if single_subject else f"1 {info.one}"
    else:
        headline = f"{count} {info.many}"
    title = f"propready: {headline}"
    shown = list(examples[:EXAMPLES])
    lines: list[str] = []
    if single_subject:
        lines.append(f"{headline}.")
    else:
        names = ", ".join(view.label for view in shown)
        more = count - len(shown)
        lines.append(f"{headline}: {names}" + (f" and {more} more." if more > 0 else "."))
    for view in shown:
        if view.reason:
            prefix = "" if single_subject else f"{view.external_order_id or view.subject}: "
            lines.append(f"{prefix}{view.reason}")
    first = shown[0] if shown else FactView(subject="")
    order, home = first.external_order_id, first.external_property_id
    action = info.action.format(order=order or "ID", home=home or "PROPERTY_ID")
    tail = [
        f"What to do: {action}",
        f"Command: {command_for(kind, order, home)}",
        f"Everything waiting: {LIST_COMMAND}",
        f"Batch: {batch_id}",
    ]
    return title, _fit(lines, tail)


def channel_test_message(batch_id: str) -> tuple[str, str]:
    return (
        "propready: test notification",
        f"This channel receives propready's notifications.\nBatch: {batch_id}",
    )


@dataclass(frozen=True, slots=True)
class DigestLine:
    kind: AttentionKind
    count: int
    oldest_age: timedelta
    overdue: int


def digest_message(
    day: date,
    lines: Sequence[DigestLine],
    told: Mapping[str, int],
    failed_messages: int,
    batch_id: str,
) -> tuple[str, str]:
    """The daily digest: what waits for a person now, and what was told since the last one."""
    waiting = sum(line.count for line in lines)
    overdue = sum(line.overdue for line in lines)
    if waiting:
        state = f"{waiting} item(s) wait for a person" + (f", {overdue} overdue" if overdue else "")
    else:
        state = "nothing waits for a person"
    title = f"propready daily digest {day.isoformat()}: {state}"
    body: list[str] = []
    for line in sorted(lines, key=lambda item: -item.oldest_age):
        info = KINDS[line.kind]
        noun = info.one if line.count == 1 else info.many
        late = f", {line.overdue} overdue" if line.overdue else ""
        body.append(f"{line.count} {noun} (oldest {format_age(line.oldest_age)}{late})")
    if not body:
        body.append("Nothing waits for a person.")
    if told:
        summary = ", ".join(f"{kind} {count}" for kind, count in sorted(told.items()))
        body.append(f"Told since the last digest: {summary}.")
    if failed_messages:
        body.append(f"{failed_messages} notification(s) could not be delivered; see /healthz.")
    tail = [f"Everything waiting: {LIST_COMMAND}", f"Batch: {batch_id}"]
    return title, _fit(body, tail)


def digest_day_due(now: datetime, zone: ZoneInfo, digest_at: str) -> date | None:
    """The local date whose digest is due at `now` (its time has come), else None.

    Read in the source time zone: on the day clocks go forward, a time that does not exist
    (02:30) is reached when the clock shows 03:00; on the day they go back, the first of the
    two 01:30s counts and the day's tick row stops the second.
    """
    if not digest_at:
        return None
    hour, minute = parse_clock(digest_at)
    local = now.astimezone(zone)
    if (local.hour, local.minute) >= (hour, minute):
        return local.date()
    return None


def parse_clock(text: str) -> tuple[int, int]:
    """ "08:00" -> (8, 0); ValueError for anything else."""
    hour_text, sep, minute_text = text.partition(":")
    if (
        not sep
        or not hour_text.isdigit()
        or not minute_text.isdigit()
        or len(minute_text) != 2
        or not 0 <= int(hour_text) <= 23
        or not 0 <= int(minute_text) <= 59
    ):
        raise ValueError(f"{text!r} is not a time of day such as 08:00")
    return int(hour_text), int(minute_text)


def _fit(lines: list[str], tail: list[str]) -> str:
    """Join lines, dropping middle lines (never the tail) until the body fits."""
    body = list(lines)
    while body and len("\n".join(body + tail)) > MAX_BODY_CHARS:
        if len(body) > 1:
            body.pop()
        else:
            keep = max(0, MAX_BODY_CHARS - len("\n".join(tail)) - 2)
            body[0] = body[0][: max(0, keep - 1)] + "…"
            break
    return "\n".join(body + tail)
