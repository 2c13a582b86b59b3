"""Prometheus metrics of `propready run`, and the loopback HTTP endpoint that serves them.

`DaemonMetrics` turns what the daemon already knows (each job's CycleSummary, every vendor
call, the outbox's state counts, the health verdict) into Prometheus series. It keeps its own
registry instead of prometheus_client's global one, so a test (or a second daemon object in one
process) starts from zero and never collides with an earlier one.

`MetricsServer` serves that registry at /metrics and the health verdict at /healthz from the
standard library's WSGI server, in daemon threads: scrapes are rare and tiny, so a web framework
would add weight and no value. The exposition itself (content negotiation, OpenMetrics, gzip)
is prometheus_client's.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from propready.core.orders import OrderState
from propready.runtime.health import HealthReport

log = structlog.get_logger("propready.metrics")

ORDER_STATES: tuple[str, ...] = tuple(state.value for state in OrderState)
DECISION_OUTCOMES = ("ordered", "not_ordered", "blocked", "invalid")
ORDER_OUTCOMES = ("placed", "rejected", "retried", "failed", "unknown", "recovered")
# Stored webhook deliveries applied to orders (service/vendor_news.py), by outcome, keyed by the
# CycleSummary field that counts them.
NEWS_OUTCOMES = {
    "news_applied": "applied",
    "news_unchanged": "unchanged",
    "news_unmatched": "unmatched",
    "news_malformed": "malformed",
}
LIFECYCLE_EVENTS = {
    "delivered": "delivered",
    "vendor_canceled": "vendor_canceled",
    "vendor_reordered": "vendor_reordered",
}
# Jobs take from a few milliseconds (an idle send tick) to many minutes (a full pass over a
# large portfolio, or a long queue drained under the vendor's rate limit): 10 ms to 30 min.
JOB_DURATION_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
)


class DaemonMetrics:
    """Every series the daemon exports, fed from its threads (prometheus_client is thread-safe)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.readiness_events = Counter(
            "propready_readiness_events_total",
            "Readiness events fired (a trigger's rising edge for one property).",
            registry=reg,
        )
        self.decisions = Counter(
            "propready_decisions_total",
            "Rule decisions on readiness events, by outcome.",
            ["outcome"],
            registry=reg,
        )
        self.orders = Gauge(
            "propready_orders",
            "Orders in the state database's outbox, by state.",
            ["state"],
            registry=reg,
        )
        self.order_outcomes = Counter(
            "propready_order_outcomes_total",
            "What happened to orders this process sent or recovered, by outcome.",
            ["outcome"],
            registry=reg,
        )
        self.vendor_calls = Counter(
            "propready_vendor_calls_total",
            "Calls to the PlanOmatic API, by operation and HTTP status (or transport failure).",
            ["operation", "outcome"],
            registry=reg,
        )
        self.rate_limit_wait_seconds = Counter(
            "propready_rate_limit_wait_seconds_total",
            "Seconds senders waited for a rate-limit slot before calling PlanOmatic.",
            registry=reg,
        )
        self.rate_limited = Counter(
            "propready_rate_limited_total",
            "HTTP 429 answers from PlanOmatic.",
            registry=reg,
        )
        self.source_rows = Counter(
            "propready_source_rows_total",
            "Rows read from the property-management database.",
            registry=reg,
        )
        self.source_rows_quarantined = Counter(
            "propready_source_rows_quarantined_total",
            "Source rows quarantined because they could not be typed or failed a sanity check.",
            registry=reg,
        )
        self.budget_decisions = Counter(
            "propready_budget_decisions_total",
            "Orders a budget or a missing price held for approval (held), or a budget skipped.",
            ["outcome"],
            registry=reg,
        )
        self.job_duration = Histogram(
            "propready_job_duration_seconds",
            "How long each scheduled job run took, failed runs included.",
            ["job"],
            buckets=JOB_DURATION_BUCKETS,
            registry=reg,
        )
        self.job_failures = Counter(
            "propready_job_failures_total",
            "Scheduled job runs that raised an error.",
            ["job"],
            registry=reg,
        )
        self.last_successful_poll = Gauge(
            "propready_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll of the property-management database.",
            registry=reg,
        )
        self.rules_version = Gauge(
            "propready_rules_version_info",
            "The rule-set version (content hash) running now; always 1.",
            ["version"],
            registry=reg,
        )
        self.audit_head_row = Gauge(
            "propready_audit_chain_head_row",
            "The audit log chain's last row id, as last published (an anchor for audit verify).",
            registry=reg,
        )
        self.audit_head_info = Gauge(
            "propready_audit_chain_head_info",
            "The audit chain head as last published: row id and hash labels; always 1. Kept by "
            "Prometheus, it lets `propready audit verify --anchor ID:HASH` prove later that rows "
            "up to it were neither changed nor cut off.",
            ["row_id", "hash"],
            registry=reg,
        )
        self.notifications = Counter(
            "propready_notifications_total",
            "Notification attempts by channel (a URL with its secrets masked) and outcome.",
            ["channel", "outcome"],
            registry=reg,
        )
        self.notify_facts = Counter(
            "propready_notify_facts_total",
            "Facts worth telling a person, noted from the audit log and state checks.",
            registry=reg,
        )
        self.notify_channel_failing = Gauge(
            "propready_notify_channel_failing_seconds",
            "How long a channel's oldest undelivered notification has been failing (absent: ok).",
            ["channel"],
            registry=reg,
        )
        # Write-back (service/writeback.py): outcome done | failed | given_up.
        self.writebacks = Counter(
            "propready_writebacks_total",
            "Write-back attempts of delivered orders to the PM system, by outcome.",
            ["outcome"],
            registry=reg,
        )
        self.healthy = Gauge(
            "propready_healthy",
            "1 when /healthz reports healthy (or still starting), 0 when unhealthy.",
            registry=reg,
        )
        # Series that exist from the start read 0 instead of being absent, so a query such as
        # rate(propready_decisions_total{outcome="blocked"}[1h]) works before the first block.
        for outcome in DECISION_OUTCOMES:
            self.decisions.labels(outcome)
        for outcome in ORDER_OUTCOMES:
            self.order_outcomes.labels(outcome)
        # --- the order lifecycle (service/vendor_news.py, service/status_sync.py) ---
        self.vendor_news = Counter(
            "propready_vendor_news_total",
            "Stored webhook deliveries applied to orders, by outcome (applied: the order "
            "changed; unchanged: older or repeated news; unmatched: no order of ours yet).",
            ["outcome"],
            registry=reg,
        )
        self.lifecycle_events = Counter(
            "propready_order_lifecycle_total",
            "Orders the vendor delivered or canceled, and homes re-ordered after a vendor cancel.",
            ["event"],
            registry=reg,
        )
        self.reconcile_retrieves = Counter(
            "propready_reconcile_retrieves_total",
            "Retrieves of orders (reconciliation and orders sync) that PlanOmatic answered.",
            registry=reg,
        )
        # CycleSummary field -> the counter it feeds.
        self._summary_counters: dict[str, Counter] = {
            "events": self.readiness_events,
            **{outcome: self.decisions.labels(outcome) for outcome in DECISION_OUTCOMES},
            **{outcome: self.order_outcomes.labels(outcome) for outcome in ORDER_OUTCOMES},
            "rate_limited": self.rate_limited,
            "rate_limit_wait_seconds": self.rate_limit_wait_seconds,
            "rows": self.source_rows,
            "quarantined": self.source_rows_quarantined,
            "notify_facts": self.notify_facts,
            "budget_held": self.budget_decisions.labels("held"),
            "budget_skipped": self.budget_decisions.labels("skipped"),
            **{key: self.vendor_news.labels(label) for key, label in NEWS_OUTCOMES.items()},
            **{key: self.lifecycle_events.labels(label) for key, label in LIFECYCLE_EVENTS.items()},
            "status_checked": self.reconcile_retrieves,
            "writeback_done": self.writebacks.labels("done"),
            "writeback_failed": self.writebacks.labels("failed"),
            "writeback_given_up": self.writebacks.labels("given_up"),
        }
        self._lock = threading.Lock()  # for the label swaps below, which take several steps
        self._order_states_seen: set[str] = set(ORDER_STATES)
        self._rules_version: str | None = None
        self._audit_head: tuple[str, str] | None = None
        self._failing_channels: set[str] = set()

    def observe_job(
        self,
        job: str,
        duration_seconds: float,
        counts: Mapping[str, int | float | bool | str | None] | None,
        error: str | None,
    ) -> None:
        """Record one job run: its duration, whether it failed, and its CycleSummary counts.

        `counts` is `CycleSummary.as_dict()`. Keys without a metric, flags (bools), text and
        negative or non-finite numbers are skipped: counters only go up. Its
        `rate_limit_wait_seconds` feeds propready_rate_limit_wait_seconds_total, so a caller
        that passes summaries does not call rate_limit_wait() for the same waits.
        """
        self.job_duration.labels(job).observe(max(0.0, duration_seconds))
        failures = self.job_failures.labels(job)  # created at 0 for every job that ever ran
        if error is not None:
            failures.inc()
        for key, value in (counts or {}).items():
            counter = self._summary_counters.get(key)
            amount = _positive_count(value)
            if counter is not None and amount is not None:
                counter.inc(amount)

    def vendor_call(self, operation: str, outcome: str) -> None:
        """One PlanOmatic call: operation create|retrieve|cancel; outcome the HTTP status as
        text ("200", "429", ...) or timeout | connect_error | connection_lost.

        Matches PlanomaticClient's `observer` callback."""
        self.vendor_calls.labels(operation, outcome).inc()

    def rate_limit_wait(self, seconds: float) -> None:
        """Time a sender waited for its rate-limit slot, reported outside a CycleSummary."""
        if math.isfinite(seconds) and seconds > 0:
            self.rate_limit_wait_seconds.inc(seconds)

    def set_orders_by_state(self, counts: Mapping[str, int]) -> None:
        """The outbox's count per state; every state gets a sample, 0 when absent from `counts`.

        A state not in OrderState (a newer process's, on a shared database) is exported too,
        and drops to 0 once it disappears, rather than freezing at its last value.
        """
        with self._lock:
            self._order_states_seen.update(counts)
            for state in sorted(self._order_states_seen):
                self.orders.labels(state).set(counts.get(state, 0))

    def set_last_successful_poll(self, at: datetime) -> None:
        """When the last poll succeeded (an aware datetime), as Unix seconds."""
        self.last_successful_poll.set(at.timestamp())

    def set_rules_version(self, version: str) -> None:
        """The running rule-set version: one series at 1; the previous version's is removed."""
        with self._lock:
            self.rules_version.labels(version).set(1)
            if self._rules_version is not None and self._rules_version != version:
                self.rules_version.remove(self._rules_version)
            self._rules_version = version

    def set_audit_head(self, row_id: int, row_hash: str) -> None:
        """The published audit chain head: one info series at 1; the previous one is removed."""
        labels = (str(row_id), row_hash)
        with self._lock:
            self.audit_head_row.set(row_id)
            self.audit_head_info.labels(*labels).set(1)
            if self._audit_head is not None and self._audit_head != labels:
                self.audit_head_info.remove(*self._audit_head)
            self._audit_head = labels

    def notification(self, channel: str, outcome: str) -> None:
        """One notification attempt: `channel` is its safe label, outcome sent | failed."""
        self.notifications.labels(channel, outcome).inc()

    def set_failing_channels(
        self, failing: Iterable[tuple[str, datetime, str | None]], now: datetime
    ) -> None:
        """Channels whose undelivered notifications keep failing, and since when."""
        with self._lock:
            current = set()
            for label, since, _error in failing:
                current.add(label)
                self.notify_channel_failing.labels(label).set(
                    max(0.0, (now - since).total_seconds())
                )
            for label in self._failing_channels - current:
                self.notify_channel_failing.remove(label)
            self._failing_channels = current

    def set_health(self, healthy: bool) -> None:
        """The health verdict as 1 or 0, so alerting needs no HTTP probe."""
        self.healthy.set(1 if healthy else 0)


def _positive_count(value: object) -> float | None:
    """`value` when it is an amount a counter can add; None for flags, text and nonsense."""
    # bool is an int subclass: a flag such as full_pass=True must not count as 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return value


class MetricsServer:
    """GET /metrics (Prometheus text) and GET /healthz (JSON; 200 healthy, 503 not) over HTTP.

    Meant for a loopback address: it has no authentication, and /healthz names failing jobs
    and their last errors.
    """

    def __init__(
        self, listen: str, registry: CollectorRegistry, health: Callable[[], HealthReport]
    ) -> None:
        """`listen` is HOST:PORT (IPv6 as [::1]:9464); port 0 picks a free port.

        `health` is called on every /healthz request, in the request's thread: it must be quick
        and thread-safe (HealthTracker.report is both).
        """
        self.listen = listen
        self._host, self._port = parse_listen(listen)
        self._metrics_app: WSGIApplication = make_wsgi_app(registry)
        self._health = health
        self._server: _ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._bound: tuple[str, int] | None = None

    def start(self) -> tuple[str, int]:
        """Bind and serve in a daemon thread; the bound (host, port).

        Raises OSError naming the address when it cannot be resolved or bound (in use, not an
        address of this host, a privileged port), with the original errno.
        """
        if self._server is not None:
            raise RuntimeError("the metrics server is already running")
        try:
            infos = socket.getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, _, _, _, sockaddr = infos[0]
            server = _ThreadingWSGIServer(sockaddr, family)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(
                exc.errno, f"metrics.listen: cannot serve on {self.listen} ({reason})"
            ) from exc
        server.set_app(self._app)
        host, port = server.server_address[:2]
        self._bound = (str(host), int(port))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},  # how quickly stop() is noticed
            name="propready-metrics",
            daemon=True,
        )
        self._thread.start()
        return self._bound

    def stop(self) -> None:
        """Stop serving and close the socket, freeing the port. Safe to repeat."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    @property
    def address(self) -> str:
        """The base URL it serves, such as http://127.0.0.1:9464 (after start())."""
        if self._bound is None:
            raise RuntimeError("the metrics server is not started")
        host, port = self._bound
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # --- WSGI ---------------------------------------------------------------------------------

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if method not in ("GET", "HEAD"):
            status, headers, body = _text("405 Method Not Allowed", "use GET or HEAD\n")
            headers.append(("Allow", "GET, HEAD"))
        elif path == "/metrics":
            status, headers, body = self._metrics(environ)
        elif path == "/healthz":
            status, headers, body = self._healthz()
        else:
            status, headers, body = _text("404 Not Found", "not found; try /metrics or /healthz\n")
        # HEAD: the headers GET would send (length included), without the body.
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [b"" if method == "HEAD" else body]

    def _metrics(self, environ: WSGIEnvironment) -> _Response:
        """prometheus_client's own app renders the registry; we only collect its answer."""
        answer: dict[str, Any] = {}

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
        ) -> Callable[[bytes], object]:
            answer["status"], answer["headers"] = status, list(headers)
            return lambda _data: None

        try:
            chunks = self._metrics_app({**environ, "REQUEST_METHOD": "GET"}, capture)
            body = b"".join(chunks)
        except Exception:  # a broken collector must not take the endpoint down
            log.exception("metrics_render_failed")
            return _text("500 Internal Server Error", "metrics could not be rendered\n")
        return str(answer["status"]), list(answer["headers"]), body

    def _healthz(self) -> _Response:
        try:
            report = self._health()
            body = json.dumps(report.as_dict(), sort_keys=True).encode("utf-8")
        except Exception as exc:  # the health check's own bug is reported, not raised into wsgiref
            log.exception("health_check_failed")
            error = {"status": "error", "healthy": False, "error": type(exc).__name__}
            return _json("500 Internal Server Error", json.dumps(error).encode("utf-8"))
        return _json("200 OK" if report.healthy else "503 Service Unavailable", body + b"\n")


_Response = tuple[str, list[tuple[str, str]], bytes]


def _text(status: str, text: str) -> _Response:
    return status, [("Content-Type", "text/plain; charset=utf-8")], text.encode("utf-8")


def _json(status: str, body: bytes) -> _Response:
    # no-store: a proxy or a browser must never answer a health probe from cache.
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    return status, headers, body


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); "[::1]:9464" -> ("::1", 9464). ValueError when malformed."""
    host, sep, port_text = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"metrics listen address must be HOST:PORT, not {listen!r}")
    return host, int(port_text)


class _QuietRequestHandler(WSGIRequestHandler):
    """No access log: Prometheus scrapes every few seconds, and stderr goes to the journal."""

    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One daemon thread per request: a slow client never holds up a scrape or shutdown."""

    daemon_threads = True

    def __init__(self, address: Any, family: socket.AddressFamily) -> None:
        self.address_family = family  # per instance: IPv4 or IPv6, whatever `listen` resolved to
        super().__init__(address, _QuietRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The base prints a traceback to stderr; a client hanging up mid-answer is not worth one.
        log.debug("metrics_connection_error", client=str(client_address), exc_info=True)
