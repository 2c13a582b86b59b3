"""The daemon's metrics and health endpoint, scraped over a real loopback socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from propready.core.orders import OrderState
from propready.runtime.health import HealthReport, HealthTracker
from propready.runtime.metrics import ORDER_STATES, DaemonMetrics, MetricsServer, parse_listen
from propready.service.components import CycleSummary

START = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Served:
    """A started server over a fresh DaemonMetrics, with a health verdict the test controls."""

    def __init__(self) -> None:
        self.metrics = DaemonMetrics()
        self.health = HealthTracker(START, poll_stale_after=timedelta(seconds=900))
        self.now = START
        self.health_source: Callable[[], HealthReport] = lambda: self.health.report(self.now)
        self.server = MetricsServer(
            "127.0.0.1:0", self.metrics.registry, lambda: self.health_source()
        )
        self.host, self.port = self.server.start()
        self.client = httpx.Client(base_url=self.server.address, timeout=5, trust_env=False)

    def scrape(self) -> Samples:
        response = self.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    def close(self) -> None:
        self.client.close()
        self.server.stop()


@pytest.fixture
def served() -> Iterator[Served]:
    served = Served()
    yield served
    served.close()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (sample_name, labels), v in samples.items() if sample_name == name}


def test_metrics_start_at_zero_with_every_decision_and_outcome_present(served: Served) -> None:
    """Before any job ran, the labelled counters already show 0 for every known label value."""
    samples = served.scrape()
    assert value(samples, "propready_readiness_events_total") == 0
    for outcome in ("ordered", "not_ordered", "blocked", "invalid"):
        assert value(samples, "propready_decisions_total", outcome=outcome) == 0
    for outcome in ("placed", "rejected", "retried", "failed", "unknown", "recovered"):
        assert value(samples, "propready_order_outcomes_total", outcome=outcome) == 0
    assert value(samples, "propready_healthy") == 0
    assert series(samples, "propready_rules_version_info") == {}


def test_job_counts_become_exact_counter_values(served: Served) -> None:
    """observe_job adds each CycleSummary count to its counter, across jobs and runs."""
    summary = CycleSummary(
        full_pass=True,
        source_error="ignored text",
        rows=120,
        quarantined=2,
        events=7,
        ordered=4,
        not_ordered=2,
        blocked=1,
        invalid=0,
        rate_limited=3,
        rate_limit_wait_seconds=1.5,
    )
    served.metrics.observe_job("poll", 0.2, summary.as_dict(), None)
    sent = CycleSummary(placed=3, rejected=1, retried=2, failed=1, unknown=1, recovered=5)
    served.metrics.observe_job("send", 4.0, sent.as_dict(), None)
    served.metrics.observe_job("poll", 0.3, CycleSummary(rows=30, events=1).as_dict(), None)
    samples = served.scrape()
    assert value(samples, "propready_source_rows_total") == 150
    assert value(samples, "propready_source_rows_quarantined_total") == 2
    assert value(samples, "propready_readiness_events_total") == 8
    assert {
        dict(labels)["outcome"]: v
        for labels, v in series(samples, "propready_decisions_total").items()
    } == {"ordered": 4, "not_ordered": 2, "blocked": 1, "invalid": 0}
    assert {
        dict(labels)["outcome"]: v
        for labels, v in series(samples, "propready_order_outcomes_total").items()
    } == {"placed": 3, "rejected": 1, "retried": 2, "failed": 1, "unknown": 1, "recovered": 5}
    assert value(samples, "propready_rate_limited_total") == 3
    assert value(samples, "propready_rate_limit_wait_seconds_total") == 1.5
    assert value(samples, "propready_job_duration_seconds_count", job="poll") == 2
    assert value(samples, "propready_job_duration_seconds_sum", job="poll") == pytest.approx(0.5)
    assert value(samples, "propready_job_duration_seconds_bucket", job="send", le="5.0") == 1
    assert value(samples, "propready_job_duration_seconds_bucket", job="send", le="2.5") == 0
    assert value(samples, "propready_job_duration_seconds_bucket", job="send", le="1800.0") == 1
    assert value(samples, "propready_job_failures_total", job="poll") == 0


def test_flags_text_negative_and_unknown_counts_are_ignored(served: Served) -> None:
    """Bools, strings, None, negatives, NaN and keys without a metric never move a counter."""
    counts: dict[str, int | float | bool | str | None] = {
        "events": True,
        "rows": -5,
        "ordered": "3",
        "blocked": None,
        "placed": float("nan"),
        "quarantined": float("inf"),
        "full_pass": True,
        "no_such_count": 9,
        "recovered": 2,
    }
    served.metrics.observe_job("poll", 0.01, counts, None)
    served.metrics.observe_job("poll", 0.01, None, None)
    samples = served.scrape()
    assert value(samples, "propready_readiness_events_total") == 0
    assert value(samples, "propready_source_rows_total") == 0
    assert value(samples, "propready_decisions_total", outcome="ordered") == 0
    assert value(samples, "propready_decisions_total", outcome="blocked") == 0
    assert value(samples, "propready_order_outcomes_total", outcome="placed") == 0
    assert value(samples, "propready_source_rows_quarantined_total") == 0
    assert value(samples, "propready_order_outcomes_total", outcome="recovered") == 2


def test_failed_job_runs_are_counted_per_job(served: Served) -> None:
    """A job run with an error counts one failure for that job and is still timed."""
    served.metrics.observe_job("status_sync", 0.05, None, "OperationalError: locked")
    served.metrics.observe_job("status_sync", 0.05, None, "OperationalError: locked")
    served.metrics.observe_job("send", 0.05, None, None)
    samples = served.scrape()
    assert value(samples, "propready_job_failures_total", job="status_sync") == 2
    assert value(samples, "propready_job_failures_total", job="send") == 0
    assert value(samples, "propready_job_duration_seconds_count", job="status_sync") == 2


def test_vendor_calls_are_labelled_by_operation_and_outcome(served: Served) -> None:
    """Each call counts under its operation and its HTTP status or transport failure."""
    for operation, outcome in [
        ("create", "201"),
        ("create", "201"),
        ("create", "429"),
        ("create", "timeout"),
        ("retrieve", "200"),
        ("cancel", "connect_error"),
    ]:
        served.metrics.vendor_call(operation, outcome)
    served.metrics.rate_limit_wait(0.75)
    served.metrics.rate_limit_wait(-1)
    samples = served.scrape()
    assert series(samples, "propready_vendor_calls_total") == {
        (("operation", "create"), ("outcome", "201")): 2,
        (("operation", "create"), ("outcome", "429")): 1,
        (("operation", "create"), ("outcome", "timeout")): 1,
        (("operation", "retrieve"), ("outcome", "200")): 1,
        (("operation", "cancel"), ("outcome", "connect_error")): 1,
    }
    assert value(samples, "propready_rate_limit_wait_seconds_total") == 0.75


def test_order_gauge_has_every_state_and_fills_missing_ones_with_zero(served: Served) -> None:
    """set_orders_by_state exports each OrderState; a state that emptied drops back to 0."""
    assert set(ORDER_STATES) == {state.value for state in OrderState}
    served.metrics.set_orders_by_state({"placed": 12, "planned": 3})
    served.metrics.set_orders_by_state({"placed": 13, "unknown": 1})
    orders = {
        dict(labels)["state"]: v
        for labels, v in series(served.scrape(), "propready_orders").items()
    }
    assert orders == dict.fromkeys(ORDER_STATES, 0) | {"placed": 13, "unknown": 1}


def test_rules_version_change_leaves_exactly_one_series(served: Served) -> None:
    """After a reload the info gauge shows only the new version, at 1."""
    served.metrics.set_rules_version("a1b2c3")
    served.metrics.set_rules_version("a1b2c3")
    assert series(served.scrape(), "propready_rules_version_info") == {(("version", "a1b2c3"),): 1}
    served.metrics.set_rules_version("d4e5f6")
    assert series(served.scrape(), "propready_rules_version_info") == {(("version", "d4e5f6"),): 1}


def test_last_poll_and_health_gauges(served: Served) -> None:
    """The last successful poll is exported as Unix seconds and health as 1 or 0."""
    served.metrics.set_last_successful_poll(START)
    served.metrics.set_health(True)
    samples = served.scrape()
    assert value(samples, "propready_last_successful_poll_timestamp_seconds") == START.timestamp()
    assert value(samples, "propready_healthy") == 1
    served.metrics.set_health(False)
    assert value(served.scrape(), "propready_healthy") == 0


def test_metrics_carry_help_text(served: Served) -> None:
    """Every propready family has HELP text for whoever browses the metrics."""
    families = list(text_string_to_metric_families(served.client.get("/metrics").text))
    ours = [family for family in families if family.name.startswith("propready_")]
    assert len(ours) >= 14
    assert all(family.documentation for family in ours)


def test_healthz_is_200_with_the_report_when_healthy(served: Served) -> None:
    """GET /healthz answers 200 and the report's JSON while healthy (here: starting)."""
    response = served.client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body == served.health.report(served.now).as_dict()
    assert (body["status"], body["healthy"], body["problems"]) == ("starting", True, [])


def test_healthz_is_503_with_the_problems_when_unhealthy(served: Served) -> None:
    """GET /healthz answers 503 and names the problems once the daemon is unhealthy."""
    served.health.poll_failed(START + timedelta(seconds=10), "source down")
    served.now = START + timedelta(seconds=1000)
    response = served.client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["healthy"]) == ("unhealthy", False)
    assert body["problems"] == [
        "no successful poll since the daemon started 1000 s ago (limit 900 s); "
        "last error: source down"
    ]
    served.health.poll_succeeded(served.now)
    assert served.client.get("/healthz").status_code == 200


def test_healthz_answers_500_when_the_health_check_itself_breaks(served: Served) -> None:
    """A health callable that raises gives a short JSON 500, and the server keeps serving."""

    def broken() -> HealthReport:
        raise RuntimeError("secret detail that must not leak")

    served.health_source = broken
    response = served.client.get("/healthz")
    assert response.status_code == 500
    assert response.json() == {"status": "error", "healthy": False, "error": "RuntimeError"}
    assert "secret" not in response.text
    assert served.client.get("/metrics").status_code == 200


def test_unknown_paths_are_404_and_other_methods_405(served: Served) -> None:
    """Only /metrics and /healthz exist, for GET and HEAD."""
    assert served.client.get("/").status_code == 404
    assert served.client.get("/metrics/extra").status_code == 404
    response = served.client.post("/metrics", content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_head_gives_headers_without_a_body(served: Served) -> None:
    """HEAD answers like GET (status, type, length) but sends no body."""
    get = served.client.get("/healthz")
    head = served.client.head("/healthz")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(get.content))
    head_metrics = served.client.head("/metrics")
    assert head_metrics.status_code == 200
    assert head_metrics.headers["content-type"].startswith("text/plain")
    assert head_metrics.content == b""


def test_openmetrics_is_served_when_asked_for(served: Served) -> None:
    """prometheus_client's content negotiation is kept: OpenMetrics for a scraper that asks."""
    response = served.client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_binding_a_port_in_use_raises_oserror_naming_the_address() -> None:
    """A taken port fails start() with an OSError that says which address and why."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(f"127.0.0.1:{port}", DaemonMetrics().registry, _never_called)
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}") as caught:
            server.start()
    assert "in use" in str(caught.value)
    assert caught.value.errno is not None


def test_stop_frees_the_port_and_may_repeat() -> None:
    """After stop() the same port can be bound again, and nothing answers there any more."""
    metrics = DaemonMetrics()
    first = MetricsServer("127.0.0.1:0", metrics.registry, _never_called)
    host, port = first.start()
    assert (host, first.address) == ("127.0.0.1", f"http://127.0.0.1:{port}")
    assert httpx.get(f"{first.address}/metrics", trust_env=False).status_code == 200
    first.stop()
    first.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=2)
    second = MetricsServer(f"127.0.0.1:{port}", metrics.registry, _never_called)
    assert second.start() == ("127.0.0.1", port)
    second.stop()


def test_ipv6_loopback_is_served_in_brackets() -> None:
    """An [::1]:PORT address binds IPv6 and reports its URL with brackets."""
    if not socket.has_ipv6:
        pytest.skip("this host has no IPv6")
    server = MetricsServer("[::1]:0", DaemonMetrics().registry, _never_called)
    host, port = server.start()
    try:
        assert host == "::1"
        assert server.address == f"http://[::1]:{port}"
        assert httpx.get(f"{server.address}/metrics", trust_env=False).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_listen_addresses_parse(listen: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, with IPv6 hosts in brackets."""
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9464", ":9464", "127.0.0.1:", "127.0.0.1:http", "h:70000"])
def test_malformed_listen_addresses_are_refused(listen: str) -> None:
    """Anything but HOST:PORT is a ValueError before any socket is opened."""
    with pytest.raises(ValueError, match="HOST:PORT"):
        MetricsServer(listen, DaemonMetrics().registry, _never_called)


def test_each_daemon_metrics_has_its_own_registry() -> None:
    """Two DaemonMetrics in one process neither collide nor share counts."""
    first, second = DaemonMetrics(), DaemonMetrics()
    first.vendor_call("create", "201")
    assert first.registry is not second.registry
    assert (
        second.registry.get_sample_value(
            "propready_vendor_calls_total", {"operation": "create", "outcome": "201"}
        )
        is None
    )
    assert (
        first.registry.get_sample_value(
            "propready_vendor_calls_total", {"operation": "create", "outcome": "201"}
        )
        == 1
    )


def _never_called() -> HealthReport:
    raise AssertionError("these tests do not ask for /healthz")


def test_health_report_round_trips_through_the_endpoint_as_json(served: Served) -> None:
    """What /healthz sends is exactly json.dumps(report.as_dict()), detail included."""
    served.health.poll_succeeded(START)
    served.health.job_failed("poll", START, "boom")
    served.now = START + timedelta(seconds=5)
    body = served.client.get("/healthz").content
    assert json.loads(body) == served.health.report(served.now).as_dict()


def test_budget_holds_and_skips_are_counted(served: Served) -> None:
    """Budget holds and skips feed propready_budget_decisions_total, which starts at 0."""
    start = served.scrape()
    assert value(start, "propready_budget_decisions_total", outcome="held") == 0
    assert value(start, "propready_budget_decisions_total", outcome="skipped") == 0
    summary = CycleSummary(budget_held=3, budget_skipped=2)
    served.metrics.observe_job("poll", 0.1, summary.as_dict(), None)
    samples = served.scrape()
    assert value(samples, "propready_budget_decisions_total", outcome="held") == 3
    assert value(samples, "propready_budget_decisions_total", outcome="skipped") == 2
