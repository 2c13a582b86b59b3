"""How a sandbox behaves: which keys exist, which entities they bill, and the vendor's tunables.

The vendor documents several of these only loosely (the rate limit differs between pages, duplicate
protection has no documented default), so each uncertain behaviour is a field here instead of a
constant buried in the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from propready.adapters.catalog_file import load_catalog
from propready.core.catalog import Catalog

DEFAULT_API_KEY = "sandbox-key"
DEFAULT_BILLING_ENTITIES = frozenset({"investment_entity_1", "investment_entity_2"})


@dataclass(frozen=True)
class SandboxConfig:
    api_keys: Mapping[str, frozenset[str]]  # api_key -> billing entity slugs linked to it
    catalog: Catalog
    rate_limit: int = 50  # requests per window per api key; 0 = unlimited
    rate_window_seconds: float = 60.0  # fixed window
    duplicate_threshold_hours: float = 0.0  # 0 = off
    duplicate_message: str = "duplicate"
    allow_dash_in_metadata_keys: bool = False
    latency_seconds: float = 0.0  # added before every answer, like a distant server
    stall_seconds: float = 30.0  # how long a `stall` fault keeps the connection silent
    # Faults queued at start, per action (see `faults`): {"create": ("429", "drop")}.
    faults: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Webhooks (adapters/sandbox/webhooks.py): off while webhook_url is None.
    webhook_url: str | None = None
    webhook_retry_seconds: float = 360.0  # the vendor retries every 6 minutes
    webhook_attempts: int = 10  # ... 10 times, then e-mails the payload
    webhook_shape: Literal["flat", "nested"] = "flat"
    webhook_duplicates: int = 0  # each delivery sent this many extra times
    webhook_out_of_order: bool = False  # send two queued deliveries newer first
    webhook_events: frozenset[str] | None = None  # the subscription's events; None = all
    auto_advance_seconds: float | None = None  # walk each order to delivered, a step each

    def __post_init__(self) -> None:
        if self.rate_limit < 0:
            raise ValueError("rate_limit must be 0 (unlimited) or positive")
        if self.rate_window_seconds <= 0:
            raise ValueError("rate_window_seconds must be positive")
        if self.duplicate_threshold_hours < 0:
            raise ValueError("duplicate_threshold_hours must be 0 (off) or positive")
        if not self.duplicate_message:
            raise ValueError("duplicate_message must not be empty")
        if self.latency_seconds < 0 or self.stall_seconds < 0:
            raise ValueError("latency_seconds and stall_seconds must be 0 or positive")
        if self.webhook_retry_seconds < 0 or self.webhook_attempts < 1:
            raise ValueError("webhook_retry_seconds must be >= 0 and webhook_attempts >= 1")
        if self.webhook_duplicates < 0:
            raise ValueError("webhook_duplicates must be 0 or more")
        if self.webhook_shape not in ("flat", "nested"):
            raise ValueError("webhook_shape must be flat or nested")
        if self.auto_advance_seconds is not None and self.auto_advance_seconds <= 0:
            raise ValueError("auto_advance_seconds must be positive")

    @classmethod
    def default(cls) -> SandboxConfig:
        """One key, `sandbox-key`, billing the two demo entities, with the bundled catalog."""
        return cls(api_keys={DEFAULT_API_KEY: DEFAULT_BILLING_ENTITIES}, catalog=load_catalog())
