"""Managing console users (`propready users ...`): each change audited with who made it."""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa

from propready.adapters.passwords import PasswordRefused, hash_password
from propready.adapters.store import audit
from propready.adapters.store import console_users as store
from propready.adapters.store.console_users import ROLES, ConsoleUser, Role
from propready.core.audit_kinds import AuditKind

NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")


class UserError(ValueError):
    """The change cannot be made; the message says why in one line (never a password)."""


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise UserError(
            f"{name[:100]!r} is not a user name: 1 to 100 letters, digits and . _ @ + -"
        )
    return name


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise UserError(f"unknown role {role!r} (viewer, approver or admin)")


def add_user(
    state: sa.Engine, name: str, role: str, password: str | None, *, by: str, now: datetime
) -> ConsoleUser:
    """Add a user; without a password only a reverse proxy ([console] auth = "proxy") logs in
    as them."""
    check_name(name)
    known_role = check_role(role)
    try:
        hashed = hash_password(password) if password is not None else None
    except PasswordRefused as exc:
        raise UserError(str(exc)) from None
    with state.begin() as connection:
        if not store.insert(connection, name, known_role, hashed, now):
            raise UserError(f"user {name!r} exists already (`propready users passwd` changes it)")
        audit.record(
            connection,
            AuditKind.CONSOLE_USER_ADDED,
            now,
            detail={"user": name, "role": known_role, "password": hashed is not None, "by": by},
        )
        user = store.find(connection, name)
    assert user is not None
    return user


def set_password(state: sa.Engine, name: str, password: str, *, by: str, now: datetime) -> None:
    """A new password (an admin's reset too); the user's sessions end."""
    try:
        hashed = hash_password(password)
    except PasswordRefused as exc:
        raise UserError(str(exc)) from None
    with state.begin() as connection:
        if not store.update(connection, name, now, password_hash=hashed):
            raise UserError(f"no user {name!r} (`propready users list`)")
        audit.record(
            connection,
            AuditKind.CONSOLE_USER_PASSWORD_CHANGED,
            now,
            detail={"user": name, "by": by},
        )


def set_disabled(state: sa.Engine, name: str, disabled: bool, *, by: str, now: datetime) -> None:
    """Disable (sessions end, logins refused) or enable a user."""
    with state.begin() as connection:
        if not store.update(connection, name, now, disabled=disabled):
            raise UserError(f"no user {name!r} (`propready users list`)")
        kind = AuditKind.CONSOLE_USER_DISABLED if disabled else AuditKind.CONSOLE_USER_ENABLED
        audit.record(connection, kind, now, detail={"user": name, "by": by})


def remove_user(state: sa.Engine, name: str, *, by: str, now: datetime) -> None:
    with state.begin() as connection:
        if not store.delete(connection, name):
            raise UserError(f"no user {name!r} (`propready users list`)")
        audit.record(
            connection, AuditKind.CONSOLE_USER_REMOVED, now, detail={"user": name, "by": by}
        )


def list_users(state: sa.Engine) -> list[ConsoleUser]:
    with state.connect() as connection:
        return store.list_users(connection)
