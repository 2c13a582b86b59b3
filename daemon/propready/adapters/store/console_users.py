"""Console users in the state database (table console_user, migration 0015)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from propready.adapters.store.schema import console_user

Role = Literal["viewer", "approver", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "approver", "admin")


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    id: int
    name: str
    role: Role
    password_hash: str | None  # never shown, never logged
    disabled: bool
    session_epoch: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> ConsoleUser:
        role = str(row["role"])
        if role not in ROLES:
            raise ValueError(f"console_user {row['name']!r} has an unknown role {role!r}")
        return cls(
            id=int(row["id"]),
            name=str(row["name"]),
            role=role,
            password_hash=row["password_hash"],
            disabled=bool(row["disabled"]),
            session_epoch=int(row["session_epoch"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    @property
    def can_act(self) -> bool:
        """Approvers and admins act on orders and attention items."""
        return self.role in ("approver", "admin")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def find(connection: sa.Connection, name: str) -> ConsoleUser | None:
    row = connection.execute(sa.select(console_user).where(console_user.c.name == name)).mappings()
    found = row.first()
    return ConsoleUser.from_row(found) if found is not None else None


def get(connection: sa.Connection, user_id: int) -> ConsoleUser | None:
    row = connection.execute(sa.select(console_user).where(console_user.c.id == user_id))
    found = row.mappings().first()
    return ConsoleUser.from_row(found) if found is not None else None


def list_users(connection: sa.Connection) -> list[ConsoleUser]:
    rows = connection.execute(sa.select(console_user).order_by(console_user.c.name)).mappings()
    return [ConsoleUser.from_row(row) for row in rows]


def insert(
    connection: sa.Connection, name: str, role: Role, password_hash: str | None, now: datetime
) -> bool:
    """Add a user; False when the name is taken."""
    if find(connection, name) is not None:
        return False
    connection.execute(
        console_user.insert().values(
            name=name,
            role=role,
            password_hash=password_hash,
            disabled=False,
            # random: a user removed and added again under the same name must not inherit
            # the sessions of the one before (cookies carry the name and the epoch)
            session_epoch=secrets.randbelow(2**30),
            created_at=now,
            updated_at=now,
        )
    )
    return True


def update(connection: sa.Connection, name: str, now: datetime, **values: Any) -> bool:
    """Change a user and end their sessions (session_epoch + 1); False when there is none."""
    result = connection.execute(
        console_user.update()
        .where(console_user.c.name == name)
        .values(updated_at=now, session_epoch=console_user.c.session_epoch + 1, **values)
    )
    return result.rowcount == 1


def delete(connection: sa.Connection, name: str) -> bool:
    result = connection.execute(console_user.delete().where(console_user.c.name == name))
    return result.rowcount == 1
