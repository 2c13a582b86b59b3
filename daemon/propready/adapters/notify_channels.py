"""Notification channels: apprise URLs (Slack, Teams Workflows, email, JSON webhooks, ...).

One `Apprise` object per URL and per send: `notify` over several URLs answers PARTIAL, and
retrying it would resend to the channels that succeeded, so the notification outbox keeps one
row per channel and owns the retries (apprise's own `retry` stays at its default, 0).

URLs are secrets (passwords, tokens in paths, header values). Outside this module a channel is
known by its `label` (apprise's privacy URL without the query string, long path segments
shortened: safe for logs, metrics and people) and its `key` (a SHA-256 fingerprint of the URL,
what the state database stores). `Channel.secrets` lists the fragments of the URL the label
does not show; the log redactor masks them wherever they appear, and failure texts are scrubbed
of them here.

apprise's email plugin imports the standard library's deprecated `imghdr` module, which warns on
Python 3.11 and 3.12; the plugins are loaded once with that one warning silenced. apprise's own
log lines may name what they send to, so they do not propagate to the daemon's log: a failure's
reason comes from the result's captured log entries instead, scrubbed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from propready.log import REDACTOR

MAX_REASON_CHARS = 200
LONG_SEGMENT = 16  # path segments at least this long are shown shortened (a token, likely)
_load_lock = threading.Lock()
_apprise_module: Any = None


def _apprise() -> Any:
    """The apprise module with its plugins loaded (once per process)."""
    global _apprise_module
    with _load_lock:
        if _apprise_module is None:
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=".*imghdr.* is deprecated", category=DeprecationWarning
                )
                import apprise
                from apprise.manager_plugins import NotificationManager

                NotificationManager().load_modules()  # type: ignore[no-untyped-call]
            logging.getLogger("apprise").propagate = False
            _apprise_module = apprise
        return _apprise_module


@dataclass(frozen=True, slots=True)
class Channel:
    url: str = field(repr=False)
    label: str
    key: str
    secrets: frozenset[str] = field(repr=False)

    def scrub(self, text: str) -> str:
        """`text` without the URL or any of its secret fragments."""
        text = text.replace(self.url, self.label)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return REDACTOR.scrub_text(text)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    error: str | None = None  # one line, scrubbed


def parse_channel(url: str) -> Channel | None:
    """The channel for an apprise URL, or None when apprise cannot use it."""
    apprise = _apprise()
    holder = apprise.Apprise()
    try:
        if not holder.add(url.strip()):
            return None
    except Exception:  # noqa: BLE001 - apprise refusing a URL is a config error, however it does
        return None
    services = list(holder)
    if len(services) != 1:
        return None
    privacy = str(services[0].url(privacy=True))
    secrets = _secret_fragments(url.strip(), privacy)
    return Channel(
        url=url.strip(),
        label=_label(privacy, secrets),
        key=hashlib.sha256(url.strip().encode("utf-8")).hexdigest()[:32],
        secrets=secrets,
    )


def scheme_of(url: str) -> str:
    """The URL's scheme, safe to show in an error (`mailto`), or "?"."""
    scheme, sep, _ = url.strip().partition("://")
    return scheme.lower() if sep and scheme.isalnum() and len(scheme) <= 20 else "?"


def send(
    channel: Channel,
    title: str,
    body: str,
    *,
    severity: str,
    batch_id: str,
    timeout_seconds: float,
) -> SendOutcome:
    """Send one message to one channel; never raises for a channel's failure."""
    apprise = _apprise()
    holder = apprise.Apprise()
    try:
        if not holder.add(_with_batch(channel.url, batch_id)):
            return SendOutcome(False, "apprise no longer accepts this URL")
        result = holder.notify(
            body=body,
            title=title,
            notify_type=_notify_type(severity),
            body_format="text",
            timeout=timeout_seconds,
        )
    except Exception as exc:  # noqa: BLE001 - a plugin bug must not stop the other channels
        return SendOutcome(False, channel.scrub(f"{type(exc).__name__}: {exc}")[:MAX_REASON_CHARS])
    if result:
        return SendOutcome(True)
    return SendOutcome(False, _reason(channel, result))


def _notify_type(severity: str) -> str:
    return {"failure": "failure", "warning": "warning"}.get(severity, "info")


def _with_batch(url: str, batch_id: str) -> str:
    """JSON webhooks get the batch id as a payload key (`"batch": ...`); others carry it in the
    body already."""
    if url.split("://", 1)[0].lower() not in ("json", "jsons"):
        return url
    base, hash_sep, fragment = url.partition("#")
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}:batch={batch_id}{hash_sep}{fragment}"


def _reason(channel: Channel, result: Any) -> str:
    messages = [
        str(entry.message)
        for entry in result.logs()
        if str(getattr(entry, "level", "")).upper() in ("WARNING", "ERROR", "CRITICAL")
    ]
    status = getattr(getattr(result, "status", None), "name", "FAILURE")
    text = messages[-1] if messages else f"apprise reported {status}"
    return channel.scrub(" ".join(text.split()))[:MAX_REASON_CHARS]


def _secret_fragments(url: str, privacy: str) -> frozenset[str]:
    """Parts of the URL that its privacy form does not show, plus passwords and header values."""
    shown = unquote(privacy)
    raw = urlsplit(url)
    found: set[str] = set()
    try:
        if raw.password:
            found.add(unquote(raw.password))
    except ValueError:
        pass
    host = raw.netloc.rsplit("@", 1)[-1].rsplit(":", 1)[0]  # as written: hostname lowercases
    shown_parts = [raw.username or "", host]
    for key, value in parse_qsl(raw.query.replace("+", "%2B"), keep_blank_values=False):
        if key.startswith(("+", "-")):  # HTTP headers: often the token itself
            found.add(value)
        else:
            shown_parts.append(value)
    for part in shown_parts:
        part = unquote(part)
        if part and part not in shown:
            found.add(part)
    for segment in raw.path.split("/"):
        segment = unquote(segment)
        if segment and (segment not in shown or len(segment) >= LONG_SEGMENT):
            found.add(segment)
    return frozenset(part for part in found if len(part) >= 4)


def _label(privacy: str, secrets: frozenset[str]) -> str:
    parts = urlsplit(privacy)
    segments = [
        f"{segment[0]}...{segment[-1]}" if len(unquote(segment)) >= LONG_SEGMENT else segment
        for segment in parts.path.split("/")
    ]
    label = f"{parts.scheme}://{parts.netloc}{'/'.join(segments)}".rstrip("/")
    for secret in sorted(secrets, key=len, reverse=True):
        label = label.replace(secret, "***")
    return label
