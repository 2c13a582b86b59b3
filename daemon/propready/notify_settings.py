"""`[notify]`: where notifications go, which kinds, when the digest comes, and how patient to be.

URLs are apprise URLs and secrets: give them as a systemd credential `notify__urls` (one URL a
line) or `PROPREADY_NOTIFY__URLS` (one URL, several lines, or a JSON array) rather than in the
file. Each is checked with apprise when the configuration loads; a URL apprise cannot use is a
one-line config error naming its position and scheme, never its text.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from propready.core.attention import AttentionKind
from propready.core.notify_plan import parse_clock

DIGEST = "digest"  # a route key besides the attention kinds


class NotifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    events: list[AttentionKind] = Field(default_factory=lambda: list(AttentionKind))
    # kind (or "digest") -> where it goes instead of every url: 1-based positions in `urls`, or
    # more apprise URLs.
    routes: dict[str, list[int | SecretStr]] = Field(default_factory=dict)
    digest_at: str = "08:00"  # in [source] timezone; "" turns the digest off
    stuck_after_hours: float = Field(default=72, gt=0)
    source_failing_after_minutes: float = Field(default=15, ge=0)
    overdue_after_hours: dict[str, float] = Field(default_factory=dict)
    group_wait_seconds: float = Field(default=30, ge=0, le=3600)
    group_interval_seconds: float = Field(default=300, ge=0, le=86400)
    interval_seconds: float = Field(default=10, gt=0, le=3600)
    timeout_seconds: float = Field(default=20, gt=0, le=300)
    retry_base_seconds: float = Field(default=30, gt=0, le=86400)
    retry_max_seconds: float = Field(default=900, gt=0, le=86400)
    give_up_after_hours: float = Field(default=48, gt=0)
    retention_days: float = Field(default=30, gt=0)

    @field_validator("urls", mode="before")
    @classmethod
    def _one_url_a_line(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError("is not a JSON array of URLs") from None
            return [line.strip() for line in text.splitlines() if line.strip()]
        return value

    @field_validator("urls")
    @classmethod
    def _apprise_accepts(cls, value: list[SecretStr]) -> list[SecretStr]:
        for position, url in enumerate(value, start=1):
            _check_url(url.get_secret_value(), f"entry {position}")
        return value

    @field_validator("routes")
    @classmethod
    def _known_routes(
        cls, value: dict[str, list[int | SecretStr]], info: ValidationInfo
    ) -> dict[str, list[int | SecretStr]]:
        known = {kind.value for kind in AttentionKind} | {DIGEST}
        count = len(info.data.get("urls") or [])
        for kind, targets in value.items():
            if kind not in known:
                raise ValueError(f"unknown kind {kind!r} (known: {', '.join(sorted(known))})")
            if not targets:
                raise ValueError(f"{kind}: empty route (leave the kind out to use every url)")
            for target in targets:
                if isinstance(target, int):
                    if not 1 <= target <= count:
                        raise ValueError(f"{kind}: {target} is not a position in urls (1..{count})")
                else:
                    _check_url(target.get_secret_value(), f"{kind}: a URL")
        return value

    @field_validator("digest_at")
    @classmethod
    def _clock(cls, value: str) -> str:
        if value:
            parse_clock(value)
        return value

    @field_validator("overdue_after_hours")
    @classmethod
    def _known_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        known = {kind.value for kind in AttentionKind}
        for kind, hours in value.items():
            if kind not in known:
                raise ValueError(f"unknown kind {kind!r} (known: {', '.join(sorted(known))})")
            if hours < 0:
                raise ValueError(f"{kind}: hours must be 0 or more")
        return value

    def channel_urls(self) -> list[str]:
        """Every URL notifications may go to, `urls` first, each once."""
        found = [url.get_secret_value() for url in self.urls]
        for targets in self.routes.values():
            found.extend(t.get_secret_value() for t in targets if not isinstance(t, int))
        return list(dict.fromkeys(found))

    def urls_for(self, kind: str) -> list[str]:
        """Where facts of `kind` (or the digest) go: its route, else every url."""
        targets = self.routes.get(kind)
        if targets is None:
            return [url.get_secret_value() for url in self.urls]
        return list(
            dict.fromkeys(
                self.urls[t - 1].get_secret_value() if isinstance(t, int) else t.get_secret_value()
                for t in targets
            )
        )

    def secret_values(self) -> list[str]:
        """The URLs and the fragments of them that must never be shown, for the log redactor."""
        urls = self.channel_urls()
        if not urls:
            return []
        from propready.adapters.notify_channels import parse_channel

        found: list[str] = []
        for url in urls:
            found.append(url)
            channel = parse_channel(url)
            if channel is not None:
                found.extend(channel.secrets)
        return found


def _check_url(url: str, where: str) -> None:
    from propready.adapters.notify_channels import parse_channel, scheme_of

    if parse_channel(url) is None:
        raise ValueError(f"{where} (scheme {scheme_of(url)}) is not a URL apprise can use")
