"""The health verdict: starting, ok, and each way of being unhealthy, from recorded outcomes."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from propready.runtime.health import HealthTracker

START = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
STALE = timedelta(seconds=900)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def tracker(failure_limit: int = 3) -> HealthTracker:
    return HealthTracker(START, poll_stale_after=STALE, failure_limit=failure_limit)


def test_before_the_first_poll_it_is_starting_and_healthy() -> None:
    """Until the first poll, and within poll_stale_after of the start, the daemon is starting."""
    health = tracker()
    for now in (at(0), at(10), at(900)):
        report = health.report(now)
        assert (report.status, report.healthy, report.problems) == ("starting", True, ())
    assert health.report(at(900)).detail["last_successful_poll"] is None
    assert health.last_successful_poll is None


def test_no_poll_at_all_for_too_long_is_unhealthy() -> None:
    """A daemon that never polled successfully turns unhealthy once poll_stale_after has passed."""
    health = tracker()
    report = health.report(at(901))
    assert (report.status, report.healthy) == ("unhealthy", False)
    assert report.problems == (
        "no successful poll since the daemon started 901 s ago (limit 900 s)",
    )


def test_recent_successful_poll_is_ok() -> None:
    """After a successful poll, with nothing failing, the verdict is ok."""
    health = tracker()
    health.poll_succeeded(at(5))
    report = health.report(at(600))
    assert (report.status, report.healthy, report.problems) == ("ok", True, ())
    assert report.detail["last_successful_poll"] == "2026-07-01T12:00:05+00:00"
    assert report.detail["uptime_seconds"] == 600
    assert health.last_successful_poll == at(5)


def test_stale_poll_names_its_age_limit_and_last_error() -> None:
    """No success for longer than the limit: the problem gives the age, the limit and the error."""
    health = tracker()
    health.poll_succeeded(at(100))
    health.poll_failed(at(400), "OperationalError: connection refused")
    health.poll_failed(at(700), "OperationalError: connection\n  refused again")
    assert health.report(at(1000)).healthy  # 900 s since the success: still within the limit
    report = health.report(at(1012))
    assert report.status == "unhealthy"
    assert report.problems == (
        "no successful poll for 912 s (limit 900 s); "
        "last error: OperationalError: connection refused again",
    )
    assert report.detail["consecutive_poll_failures"] == 2


def test_a_successful_poll_clears_the_stale_verdict_and_the_failures() -> None:
    """The next success makes the daemon healthy again and resets the failure count."""
    health = tracker()
    health.poll_failed(at(300), "timeout")
    assert not health.report(at(1000)).healthy
    health.poll_succeeded(at(1001))
    report = health.report(at(1002))
    assert (report.status, report.problems) == ("ok", ())
    assert report.detail["consecutive_poll_failures"] == 0
    assert report.detail["last_poll_error"] is None


def test_a_success_older_than_a_newer_failure_does_not_clear_it() -> None:
    """A success read late from the shared checkpoint neither rewinds time nor hides newer failures."""
    health = tracker()
    health.poll_succeeded(at(500))
    health.poll_failed(at(600), "source down")
    health.poll_succeeded(at(200))
    assert health.last_successful_poll == at(500)
    report = health.report(at(1500))
    assert report.detail["consecutive_poll_failures"] == 1
    assert report.problems == (
        "no successful poll for 1000 s (limit 900 s); last error: source down",
    )


def test_success_before_the_start_leaves_a_full_grace_period() -> None:
    """A success from before this process started counts from the start, not from back then."""
    health = tracker()
    health.poll_succeeded(START - timedelta(hours=2))
    assert health.report(at(900)).status == "ok"
    assert health.report(at(901)).problems == (
        "no successful poll since the daemon started 901 s ago (limit 900 s)",
    )


def test_send_failures_reaching_the_limit_are_unhealthy_until_a_definite_answer() -> None:
    """failure_limit sends in a row without a definite answer: unhealthy; one answer recovers."""
    health = tracker(failure_limit=3)
    health.poll_succeeded(at(0))
    health.send_failed(at(10), "1 retried")
    health.send_failed(at(20), "1 unknown")
    assert health.report(at(21)).healthy
    assert health.report(at(21)).detail["consecutive_send_failures"] == 2
    health.send_failed(at(30), "sends did not reach a definite answer: 2 retried")
    report = health.report(at(31))
    assert (report.status, report.healthy) == ("unhealthy", False)
    assert report.problems == (
        "3 sends in a row without a definite answer from PlanOmatic (limit 3); "
        "last error: sends did not reach a definite answer: 2 retried",
    )
    health.send_succeeded(at(40))
    report = health.report(at(41))
    assert (report.status, report.problems) == ("ok", ())
    assert report.detail["consecutive_send_failures"] == 0


def test_a_job_failing_repeatedly_is_unhealthy_and_recovers_on_success() -> None:
    """A job that raised failure_limit times in a row is a problem; one clean run clears it."""
    health = tracker()
    health.poll_succeeded(at(0))
    health.job_failed("status_sync", at(10), "OperationalError: database is locked")
    health.job_failed("status_sync", at(20), "OperationalError: database is locked")
    report = health.report(at(21))
    assert report.healthy
    assert report.detail["failing_jobs"] == {
        "status_sync": {"failures": 2, "error": "OperationalError: database is locked"}
    }
    health.job_failed("status_sync", at(30), "OperationalError: disk I/O error")
    report = health.report(at(31))
    assert report.problems == (
        "job status_sync failed 3 times in a row (limit 3); "
        "last error: OperationalError: disk I/O error",
    )
    health.job_succeeded("status_sync", at(40))
    report = health.report(at(41))
    assert (report.status, report.detail["failing_jobs"]) == ("ok", {})


def test_every_problem_is_listed_at_once() -> None:
    """A stale poll, failing sends and two failing jobs are all reported together."""
    health = tracker(failure_limit=1)
    health.poll_failed(at(10), "source down")
    health.send_failed(at(20), "timeout")
    health.job_failed("send", at(30), "OperationalError: state database down")
    health.job_failed("poll", at(40), "OperationalError: state database down")
    report = health.report(at(1000))
    assert not report.healthy
    assert report.problems == (
        "no successful poll since the daemon started 1000 s ago (limit 900 s); "
        "last error: source down",
        "1 sends in a row without a definite answer from PlanOmatic (limit 1); last error: timeout",
        "job poll failed 1 times in a row (limit 1); last error: OperationalError: state database down",
        "job send failed 1 times in a row (limit 1); last error: OperationalError: state database down",
    )


def test_problems_during_start_up_make_it_unhealthy_not_starting() -> None:
    """Failing jobs before the first poll are not hidden behind "starting"."""
    health = tracker(failure_limit=1)
    health.job_failed("recovery", at(1), "OperationalError: no such table: orders")
    report = health.report(at(2))
    assert (report.status, report.healthy) == ("unhealthy", False)


def test_reload_can_change_how_old_a_poll_may_get() -> None:
    """set_poll_stale_after (config reload) applies to the next verdict."""
    health = tracker()
    health.poll_succeeded(at(0))
    assert health.report(at(700)).healthy
    health.set_poll_stale_after(timedelta(seconds=600))
    assert health.report(at(700)).problems == ("no successful poll for 700 s (limit 600 s)",)
    assert health.report(at(700)).detail["poll_stale_after_seconds"] == 600


def test_as_dict_is_the_json_body_of_healthz() -> None:
    """as_dict() holds status, healthy, problems and the detail, and json.dumps accepts it."""
    health = tracker(failure_limit=1)
    health.poll_succeeded(at(0))
    health.poll_failed(at(50), "timeout")
    health.job_failed("poll", at(50), "boom")
    body = json.loads(json.dumps(health.report(at(60)).as_dict()))
    assert body == {
        "status": "unhealthy",
        "healthy": False,
        "problems": ["job poll failed 1 times in a row (limit 1); last error: boom"],
        "last_successful_poll": "2026-07-01T12:00:00+00:00",
        "consecutive_poll_failures": 1,
        "last_poll_error": "timeout",
        "poll_stale_after_seconds": 900,
        "consecutive_send_failures": 0,
        "last_send_error": None,
        "failing_jobs": {"poll": {"failures": 1, "error": "boom"}},
        "sending_paused": None,
        "uptime_seconds": 60,
        "notify_channels_failing": {},
    }


def test_a_notification_channel_failing_for_over_an_hour_is_a_problem() -> None:
    """A channel failing for 59 minutes is reported in the detail only; past an hour it makes
    the daemon unhealthy, named by its safe label."""
    health = tracker()
    health.poll_succeeded(at(3600))
    health.set_failing_channels([("slack://T...F/B...L/a...x", at(0), "HTTP 500")])
    early = health.report(at(59 * 60))
    assert early.healthy
    assert early.detail["notify_channels_failing"] == {
        "slack://T...F/B...L/a...x": {"since": "2026-07-01T12:00:00+00:00", "error": "HTTP 500"}
    }
    late = health.report(at(3601))
    assert not late.healthy
    assert late.problems == (
        "notification channel slack://T...F/B...L/a...x failing for 60 min (limit 60); "
        "last error: HTTP 500",
    )
    health.set_failing_channels([])
    assert health.report(at(3602)).healthy


def test_long_errors_are_shortened() -> None:
    """A huge error text (a whole SQL statement) is cut so /healthz stays readable."""
    health = tracker(failure_limit=1)
    health.send_failed(at(1), "x" * 10_000)
    error = health.report(at(2)).detail["last_send_error"]
    assert 0 < len(error) <= 300


def test_naive_times_are_refused() -> None:
    """Every time must be aware: a naive one would break comparisons later, in a request thread."""
    health = tracker()
    with pytest.raises(ValueError, match="timezone-aware"):
        health.poll_succeeded(datetime(2026, 7, 1, 12, 5))
    with pytest.raises(ValueError, match="timezone-aware"):
        HealthTracker(datetime(2026, 7, 1), poll_stale_after=STALE)


def test_outcomes_from_many_threads_are_all_counted() -> None:
    """Concurrent failures from several threads add up exactly (the tracker locks)."""
    health = tracker(failure_limit=10_000)

    def fail_sends() -> None:
        for index in range(500):
            health.send_failed(at(index), "timeout")

    threads = [threading.Thread(target=fail_sends) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert health.report(at(600)).detail["consecutive_send_failures"] == 4000


def test_sending_paused_for_every_host_is_unhealthy_until_it_resumes() -> None:
    """A refused API key (or an operator's pause) makes health 503 with the vendor's words."""
    health = tracker()
    health.poll_succeeded(at(10))
    health.set_sending_paused("api_key_refused: api_key: unauthorized")
    report = health.report(at(20))
    assert not report.healthy
    (problem,) = report.problems
    assert problem.startswith("sending is paused for every host: api_key_refused")
    assert report.detail["sending_paused"] == "api_key_refused: api_key: unauthorized"
    health.set_sending_paused(None)
    assert health.report(at(30)).healthy
