"""Is the state database there and at this version's schema? One line for a person if not."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from propready.adapters.store import migrate


class StateUnavailable(Exception):
    """The state database cannot be used; the message is one line naming `state.url`."""


def require_state_at_head(engine: sa.Engine, url: str) -> None:
    """Raise StateUnavailable unless the database answers and its schema is at head."""
    try:
        current = migrate.current_revision(engine)
    except sa.exc.SQLAlchemyError as exc:
        raise StateUnavailable(describe_state_failure(url, exc)) from None
    head = migrate.head_revision()
    if current != head:
        raise StateUnavailable(
            f"state.url: the schema of {database_target(url)} is at {current or 'nothing'}, "
            f"this version needs {head}: run `propready db upgrade`"
        )


def describe_state_failure(url: str, exc: BaseException) -> str:
    """`state.url: cannot connect to 127.0.0.1:5999/propready (connection refused)`."""
    return f"state.url: cannot connect to {database_target(url)} ({_driver_reason(exc)})"


def database_target(url: str) -> str:
    """Where a URL points, without user or password: host:port/database, or the SQLite file."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        return "an unreadable URL"
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.host or 'localhost'}{port}/{parsed.database or ''}"


def _driver_reason(exc: BaseException) -> str:
    """The driver's own words, shortened: the last clause of its first line, in lower case."""
    origin = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    first_line = (str(origin).strip().splitlines() or [type(origin).__name__])[0]
    reason = first_line.rsplit(": ", 1)[-1].strip().rstrip(".")
    return (reason or type(origin).__name__)[:200].lower()
