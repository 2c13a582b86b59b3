"""Is the daemon doing its job? The verdict behind /healthz and the `propready_healthy` gauge.

The watchdog (systemd) restarts a daemon that stopped making progress at all; health answers a
different question for monitoring: the process runs, but does it still see the PM database, does
the vendor still answer, does every job still complete? Restarting cures none of those, so they
are reported, not acted on.

A daemon is unhealthy when
- no poll succeeded for longer than `poll_stale_after`, counted from the last success or from
  the start, whichever is later: homes becoming ready go unnoticed;
- `failure_limit` sends in a row got no definite answer from PlanOmatic (timeouts, 5xx, 429
  storms): orders pile up or sit in `unknown`;
- a job raised `failure_limit` times in a row (the state database is down, a bug);
- sending is paused for every host (the vendor refused the API key, or an operator paused it):
  orders wait in `planned` until a person acts.
- a notification channel has failed to take a message for over `channel_failing_after` (an
  hour): people are not hearing about what needs them.

Pure bookkeeping: callers pass every time in (aware UTC datetimes), and the tracker never reads
the clock, so tests and the daemon agree on what "now" is.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Error texts end up in a JSON body and in one-line problem sentences: keep them short and flat.
MAX_ERROR_CHARS = 300
CHANNEL_FAILING_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class HealthReport:
    """One verdict: `status` is "ok", "starting" (no poll yet, still in time) or "unhealthy"."""

    healthy: bool
    status: str
    problems: tuple[str, ...]  # one sentence each, for people reading /healthz or an alert
    detail: Mapping[str, Any]  # JSON-able numbers and strings behind the verdict

    def as_dict(self) -> dict[str, Any]:
        """The /healthz body: status, healthy, problems, then the detail."""
        return {
            "status": self.status,
            "healthy": self.healthy,
            "problems": list(self.problems),
            **self.detail,
        }


@dataclass
class _Streak:
    """Consecutive failures of one kind, and the last error among them."""

    failures: int = 0
    error: str | None = None

    def failed(self, error: str) -> None:
        self.failures += 1
        self.error = _short(error)

    def reset(self) -> None:
        self.failures = 0
        self.error = None


class HealthTracker:
    """Collects poll, send and job outcomes from the daemon's threads and judges them on request."""

    def __init__(
        self, started_at: datetime, *, poll_stale_after: timedelta, failure_limit: int = 3
    ) -> None:
        _require_aware(started_at)
        if poll_stale_after <= timedelta(0):
            raise ValueError("poll_stale_after must be positive")
        if failure_limit < 1:
            raise ValueError("failure_limit must be at least 1")
        self._started_at = started_at
        self._poll_stale_after = poll_stale_after
        self._failure_limit = failure_limit
        self._lock = threading.Lock()
        self._last_poll_success: datetime | None = None
        self._last_poll_failure: datetime | None = None
        self._polls = _Streak()
        self._sends = _Streak()
        self._jobs: dict[str, _Streak] = {}
        self._sending_paused: str | None = None
        self._channels: list[tuple[str, datetime, str | None]] = []

    @property
    def last_successful_poll(self) -> datetime | None:
        """When a poll last succeeded (None before the first one)."""
        with self._lock:
            return self._last_poll_success

    def poll_succeeded(self, at: datetime) -> None:
        """A poll (here or, through the shared checkpoint, on another host) succeeded at `at`.

        The daemon reports successes it reads from the shared checkpoint, which may be older
        than a failure seen here since: such a success neither moves the last success back nor
        clears the newer failures.
        """
        _require_aware(at)
        with self._lock:
            if self._last_poll_success is None or at > self._last_poll_success:
                self._last_poll_success = at
            if self._last_poll_failure is None or at >= self._last_poll_failure:
                self._polls.reset()

    def poll_failed(self, at: datetime, error: str) -> None:
        """A poll could not read the PM database; `error` says why."""
        _require_aware(at)
        with self._lock:
            self._last_poll_failure = at
            self._polls.failed(error)

    def send_succeeded(self, at: datetime) -> None:
        """The vendor gave a definite answer (the order placed, or a 400 rejection)."""
        _require_aware(at)
        with self._lock:
            self._sends.reset()

    def send_failed(self, at: datetime, error: str) -> None:
        """The vendor was not reached or answered ambiguously (5xx, timeout, repeated 429)."""
        _require_aware(at)
        with self._lock:
            self._sends.failed(error)

    def job_succeeded(self, job: str, at: datetime) -> None:
        """A scheduled job ran to its end (whatever its business outcome)."""
        _require_aware(at)
        with self._lock:
            self._jobs.pop(job, None)

    def job_failed(self, job: str, at: datetime, error: str) -> None:
        """A scheduled job raised (for example because the state database is down)."""
        _require_aware(at)
        with self._lock:
            self._jobs.setdefault(job, _Streak()).failed(error)

    def set_sending_paused(self, reason: str | None) -> None:
        """What the last send job found: sending paused (and why), or None when it may send."""
        with self._lock:
            self._sending_paused = _short(reason) if reason is not None else None

    def set_failing_channels(self, failing: list[tuple[str, datetime, str | None]]) -> None:
        """Notification channels with undelivered messages: (safe label, failing since, error)."""
        with self._lock:
            self._channels = list(failing)

    def set_poll_stale_after(self, value: timedelta) -> None:
        """A config reload changed the poll interval, and with it how old a poll may get."""
        if value <= timedelta(0):
            raise ValueError("poll_stale_after must be positive")
        with self._lock:
            self._poll_stale_after = value

    def report(self, now: datetime) -> HealthReport:
        """The verdict at `now`, listing every problem found (not just the first)."""
        _require_aware(now)
        with self._lock:
            problems = [
                *self._poll_problems(now),
                *self._send_problems(),
                *self._job_problems(),
                *self._pause_problems(),
                *self._channel_problems(now),
            ]
            detail: dict[str, Any] = {
                "last_successful_poll": (
                    self._last_poll_success.isoformat() if self._last_poll_success else None
                ),
                "consecutive_poll_failures": self._polls.failures,
                "last_poll_error": self._polls.error,
                "poll_stale_after_seconds": _seconds(self._poll_stale_after),
                "consecutive_send_failures": self._sends.failures,
                "last_send_error": self._sends.error,
                "failing_jobs": {
                    job: {"failures": streak.failures, "error": streak.error}
                    for job, streak in sorted(self._jobs.items())
                },
                "sending_paused": self._sending_paused,
                "uptime_seconds": _seconds(now - self._started_at),
                "notify_channels_failing": {
                    label: {"since": since.isoformat(), "error": _short(error or "")}
                    for label, since, error in self._channels
                },
            }
            never_polled = self._last_poll_success is None
        if problems:
            status = "unhealthy"
        elif never_polled:
            status = "starting"
        else:
            status = "ok"
        return HealthReport(
            healthy=not problems, status=status, problems=tuple(problems), detail=detail
        )

    def _poll_problems(self, now: datetime) -> list[str]:
        # A success from before this process started (read from the shared checkpoint) does
        # not make a fresh daemon stale at once: the grace period starts with the process.
        last = self._last_poll_success
        since = self._started_at if last is None else max(last, self._started_at)
        age = now - since
        if age <= self._poll_stale_after:
            return []
        limit = _seconds(self._poll_stale_after)
        if last is None or last < self._started_at:
            problem = (
                f"no successful poll since the daemon started {_seconds(age)} s ago "
                f"(limit {limit} s)"
            )
        else:
            problem = f"no successful poll for {_seconds(age)} s (limit {limit} s)"
        if self._polls.error is not None:
            problem += f"; last error: {self._polls.error}"
        return [problem]

    def _send_problems(self) -> list[str]:
        if self._sends.failures < self._failure_limit:
            return []
        return [
            f"{self._sends.failures} sends in a row without a definite answer from PlanOmatic "
            f"(limit {self._failure_limit}); last error: {self._sends.error}"
        ]

    def _pause_problems(self) -> list[str]:
        if self._sending_paused is None:
            return []
        return [
            f"sending is paused for every host: {self._sending_paused}; orders wait in planned "
            "(fix the API key and reload, or `propready sending resume`)"
        ]

    def _job_problems(self) -> list[str]:
        return [
            f"job {job} failed {streak.failures} times in a row "
            f"(limit {self._failure_limit}); last error: {streak.error}"
            for job, streak in sorted(self._jobs.items())
            if streak.failures >= self._failure_limit
        ]

    def _channel_problems(self, now: datetime) -> list[str]:
        return [
            f"notification channel {label} failing for {_seconds(now - since) // 60} min "
            f"(limit {_seconds(CHANNEL_FAILING_AFTER) // 60}); last error: {_short(error or '?')}"
            for label, since, error in self._channels
            if now - since > CHANNEL_FAILING_AFTER
        ]


def _require_aware(moment: datetime) -> None:
    # A naive datetime would compare with TypeError deep inside report(), in a request thread.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"health times must be timezone-aware (UTC), got {moment!r}")


def _seconds(span: timedelta) -> int:
    """Whole seconds: health speaks at human resolution ("912 s"), not microseconds."""
    return int(span.total_seconds())


def _short(error: str) -> str:
    flat = " ".join(error.split())
    if len(flat) > MAX_ERROR_CHARS:
        flat = flat[: MAX_ERROR_CHARS - 1] + "…"
    return flat
