"""The receiver's Prometheus series, in a registry of its own (served at /metrics by `app`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# What became of each request to the webhook path (README, "Webhooks"): `stored`, `duplicate`
# and `malformed` were acknowledged (2xx); the others were refused.
OUTCOMES = ("stored", "duplicate", "malformed", "unauthorized", "too_large", "store_failed")
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.deliveries = Counter(
            "propready_webhook_deliveries_total",
            "Requests to the webhook path, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "propready_webhook_ack_seconds",
            "From the request's arrival at the app to its answer, for stored and duplicate "
            "deliveries (the commit included).",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.last_stored = Gauge(
            "propready_webhook_last_stored_timestamp_seconds",
            "Unix time of the last delivery stored (a new row).",
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # every series exists at 0 from the start
            self.deliveries.labels(outcome)

    def delivery(self, outcome: str, seconds: float | None = None, at: float | None = None) -> None:
        self.deliveries.labels(outcome).inc()
        if seconds is not None:
            self.ack_seconds.observe(seconds)
        if at is not None:
            self.last_stored.set(at)
