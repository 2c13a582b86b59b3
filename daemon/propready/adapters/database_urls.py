"""Opening the state and source databases with errors an operator can act on, in one line.

Every command that opens a database goes through `open_engine`: a malformed URL (`postgres://`,
a typo such as `postgresq://`, a driver that is not installed, no URL at all), a folder that
cannot be created, or a server that cannot be reached becomes a `DatabaseSettingError` naming the
setting and the target, e.g. `state.url: cannot connect to 127.0.0.1:5999 (connection refused)`.
Passwords never appear: the target is host and port (or the SQLite file), and the driver's text
is reduced to its reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

EXAMPLES = "sqlite:////var/lib/propready/state.db or postgresql+psycopg://USER@HOST/DATABASE"


class DatabaseSettingError(Exception):
    """A database setting cannot be used; the message is one line naming setting and target.

    `exit_code` is 2 for a URL that can never work (a config error) and 1 for a database that
    cannot be reached now.
    """

    def __init__(self, setting: str, reason: str, *, exit_code: int = 1) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.exit_code = exit_code


def open_engine(
    setting: str, url: str, factory: Callable[[str], sa.Engine], *, connect: bool = True
) -> sa.Engine:
    """An engine from `factory(url)`; with `connect`, one connection is tried first.

    Raises DatabaseSettingError for every mistake an operator can make with the URL.
    """
    parsed = parse(setting, url)
    if parsed.get_backend_name() == "sqlite" and setting == "source.url":
        database = parsed.database or ""
        if database and database != ":memory:" and not Path(database).is_file():
            raise DatabaseSettingError(setting, f"no SQLite file at {database}")
    try:
        engine = factory(url)
    except sa.exc.NoSuchModuleError:
        raise DatabaseSettingError(
            setting, f"unknown database kind {parsed.drivername!r} (use {EXAMPLES})", exit_code=2
        ) from None
    except ModuleNotFoundError as exc:
        raise DatabaseSettingError(
            setting,
            f"the driver for {parsed.drivername!r} is not installed ({exc}); "
            "propready ships sqlite and postgresql+psycopg",
            exit_code=2,
        ) from None
    except sa.exc.ArgumentError as exc:
        raise DatabaseSettingError(setting, f"not a usable URL ({exc})", exit_code=2) from None
    except OSError as exc:  # the SQLite file's folder cannot be created
        raise DatabaseSettingError(
            setting, f"cannot use {target(parsed)} ({exc.strerror or exc})"
        ) from None
    if connect:
        try:
            with engine.connect():
                pass
        except sa.exc.DBAPIError as exc:
            engine.dispose()
            raise DatabaseSettingError(setting, unreachable(parsed, exc)) from None
    return engine


def parse(setting: str, url: str) -> sa.URL:
    """The URL, or DatabaseSettingError (exit code 2) saying what is wrong with it."""
    if url.startswith(("postgres://", "postgres+")):
        raise DatabaseSettingError(
            setting,
            "'postgres://' is not a SQLAlchemy URL scheme; write postgresql+psycopg://",
            exit_code=2,
        )
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseSettingError(
            setting, f"{_shown(url)} is not a database URL (use {EXAMPLES})", exit_code=2
        ) from None
    return parsed


def target(parsed: sa.URL) -> str:
    """What the URL points at, without credentials: host:port/database or the SQLite file."""
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "an in-memory SQLite database"
    port = parsed.port or {"postgresql": 5432, "mysql": 3306}.get(parsed.get_backend_name())
    host = parsed.host or "localhost"
    return f"{host}:{port}" if port else host


def unreachable(parsed: sa.URL, exc: sa.exc.DBAPIError) -> str:
    """One line for a failed connection: the target and the driver's reason."""
    text = str(exc.orig if exc.orig is not None else exc)
    reason = _reason(text)
    where = target(parsed)
    if parsed.get_backend_name() == "sqlite":
        return f"cannot open SQLite file {where} ({reason})"
    if reason.startswith(("database ", "role ", "password ")):
        return f"{reason} on {where}"
    return f"cannot connect to {where} ({reason})"


_KNOWN_REASONS = (
    (re.compile(r"connection refused", re.I), "connection refused"),
    (
        re.compile(
            r"failed to resolve host|could not translate host name|name or service not known"
            r"|nodename nor servname",
            re.I,
        ),
        "host name not found",
    ),
    (re.compile(r"timeout expired|timed out", re.I), "timed out"),
    (re.compile(r"no route to host", re.I), "no route to host"),
    (re.compile(r"network is unreachable", re.I), "network unreachable"),
)


def _reason(text: str) -> str:
    for pattern, reason in _KNOWN_REASONS:
        if pattern.search(text):
            return reason
    first = text.strip().splitlines()[0] if text.strip() else "no reason given"
    # psycopg: 'connection failed: connection to server at "h", port 5432 failed: FATAL:  x'
    first = re.sub(r"^.*failed: (FATAL:\s+)?", "", first)
    return re.sub(r"\s+", " ", first)[:200]


def _shown(url: str) -> str:
    """A URL as quoted in a message: any password replaced by ***."""
    text = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
    return repr(text[:120])


def same_database(first: str, second: str) -> bool:
    """Whether two URLs name one database (whatever the driver, user or password)."""
    try:
        a, b = make_url(first), make_url(second)
    except sa.exc.ArgumentError:
        return False
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        if not a.database or not b.database or ":memory:" in (a.database, b.database):
            return False
        return Path(a.database).resolve() == Path(b.database).resolve()
    return (target(a), a.database) == (target(b), b.database)
