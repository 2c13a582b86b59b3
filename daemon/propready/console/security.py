"""The console's guards: signed session cookies, CSRF tokens, login throttling, headers.

- The session is a cookie signed with [console] session_secret, else the key generated once and
  kept in the state database (adapters/store/console_secrets.py) (itsdangerous, timed): the user's
  name, their session epoch (a password or role change and disabling raise it, which ends every
  older session) and the CSRF token. HttpOnly, SameSite=Lax, Secure when the request came over
  https or `cookie_secure` holds for a client that is not on loopback.
- Every POST form carries the CSRF token in a hidden field (the login form too: a visitor gets a
  cookie with a token before logging in); it is compared in constant time, and a POST without it
  is refused with 403.
- Login failures are counted per user name and per client address in this process;
  `login_max_failures` within `login_lockout_minutes` locks either for that long.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "propready_console"
CSRF_FIELD = "csrf_token"

SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' https: data:; frame-ancestors 'none'; "
        b"form-action 'self'; base-uri 'none'; object-src 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


@dataclass(frozen=True, slots=True)
class Session:
    user: str | None  # None: a visitor who has not logged in
    epoch: int
    csrf: str

    @classmethod
    def anonymous(cls) -> Session:
        return cls(None, 0, secrets.token_urlsafe(32))


class SessionCodec:
    """Signs and checks session cookies; a cookie older than `max_age` is not accepted."""

    def __init__(self, secret: str, max_age: timedelta) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="propready-console-session")
        self._max_age = int(max_age.total_seconds())

    def dumps(self, session: Session) -> str:
        return self._serializer.dumps({"u": session.user, "e": session.epoch, "c": session.csrf})

    def loads(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            data: Any = self._serializer.loads(value, max_age=self._max_age)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        user, epoch, csrf = data.get("u"), data.get("e"), data.get("c")
        if not isinstance(csrf, str) or not isinstance(epoch, int):
            return None
        if user is not None and not isinstance(user, str):
            return None
        return Session(user, epoch, csrf)

    @property
    def max_age(self) -> int:
        return self._max_age


def csrf_ok(session: Session | None, given: object) -> bool:
    if session is None or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(session.csrf.encode(), given.encode())


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoginThrottle:
    """Failed logins per key (a user name, a client address) within a sliding window."""

    def __init__(self, max_failures: int, window: timedelta, clock: Callable[[], datetime]):
        self._max = max_failures
        self._window = window
        self._clock = clock
        self._failures: dict[str, deque[datetime]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, key: str, now: datetime) -> deque[datetime]:
        times = self._failures[key]
        while times and times[0] <= now - self._window:
            times.popleft()
        return times

    def locked_until(self, *keys: str) -> datetime | None:
        """When the lock on any of `keys` ends, or None when none is locked."""
        now = self._clock()
        ends = []
        with self._lock:
            for key in keys:
                times = self._trim(key, now)
                if len(times) >= self._max:
                    ends.append(times[-1] + self._window)
                if not times:
                    self._failures.pop(key, None)
        return max(ends) if ends else None

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                self._trim(key, now).append(now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class SecurityHeaders:
    """Adds the security headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
