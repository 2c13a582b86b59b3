"""`propready check`'s line for the web console ([console]): can anybody log in, and is it
exposed beyond this host without its reverse proxy."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from propready.adapters.store import console_users
from propready.adapters.store.engine import create_state_engine
from propready.settings import Settings


def console_check_lines(settings: Settings) -> list[tuple[str, bool | None, str]]:
    """(name, ok, detail) lines; none while [console] listen is empty."""
    console = settings.console
    if not console.listen:
        return []
    engine = create_state_engine(settings.state.url)
    try:
        with engine.connect() as connection:
            users = console_users.list_users(connection)
    except sa.exc.SQLAlchemyError:
        return []  # the state line already says what is wrong with the database
    finally:
        engine.dispose()
    usable = [u for u in users if not u.disabled and (console.auth == "proxy" or u.password_hash)]
    lines: list[tuple[str, bool | None, str]] = []
    if not usable:
        hint = "--no-password" if console.auth == "proxy" else "(it asks for a password)"
        lines.append(
            (
                "console",
                False,
                f"nobody can log in to the console on {console.listen} (auth {console.auth}): "
                f"add a user with `propready users add NAME --role approver {hint}`",
            )
        )
    else:
        roles = Counter(u.role for u in usable)
        counted = ", ".join(
            f"{roles[r]} {r}(s)" for r in ("admin", "approver", "viewer") if roles[r]
        )
        lines.append(
            ("console", True, f"on {console.listen}, auth {console.auth}, users: {counted}")
        )
    host = console.listen.rpartition(":")[0].strip("[]")
    if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
        lines.append(
            (
                "console",
                None,
                f"[console] listen = {console.listen} is reachable beyond this host: serve it "
                "on loopback behind the TLS reverse proxy (RUNBOOK, Web console)",
            )
        )
    return lines
