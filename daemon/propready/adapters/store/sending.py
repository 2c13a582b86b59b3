"""Whether sending is paused for every host: the vendor refused the API key, or an operator said so.

The pause lives in the state database, so every host and every `run --once` sees it. It keeps a
fingerprint of the refused key (never the key): a configuration with another key may try one
order, and its success lifts the pause.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import sending_pause

VENDOR = "planomatic"


@dataclass(frozen=True, slots=True)
class SendingPause:
    paused_at: datetime
    reason: str
    key_fingerprint: str | None  # None: paused by an operator, whatever the key
    paused_by: str

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> SendingPause:
        return cls(
            paused_at=row["paused_at"],
            reason=str(row["reason"]),
            key_fingerprint=row["key_fingerprint"],
            paused_by=str(row["paused_by"]),
        )

    def holds_for(self, fingerprint: str) -> bool:
        """Whether this key must not send: the refused key, or any key when an operator paused."""
        return self.key_fingerprint is None or self.key_fingerprint == fingerprint


def key_fingerprint(api_key: str) -> str:
    """A short digest that tells keys apart without revealing them."""
    return hashlib.sha256(f"propready-key:{api_key}".encode()).hexdigest()[:16]


def current_pause(connection: sa.Connection) -> SendingPause | None:
    row = (
        connection.execute(sa.select(sending_pause).where(sending_pause.c.name == VENDOR))
        .mappings()
        .first()
    )
    return SendingPause.from_row(row) if row is not None else None


def pause(
    connection: sa.Connection,
    *,
    reason: str,
    key_fingerprint: str | None,
    by: str,
    now: datetime,
) -> None:
    """Pause sending (or record the newest refused key of a pause already in place)."""
    values = {
        "paused_at": now,
        "reason": reason,
        "key_fingerprint": key_fingerprint,
        "paused_by": by,
    }
    updated = connection.execute(
        sending_pause.update().where(sending_pause.c.name == VENDOR).values(**values)
    )
    if updated.rowcount == 0:
        connection.execute(sending_pause.insert().values(name=VENDOR, **values))


def resume(connection: sa.Connection) -> bool:
    """Lift the pause; False when sending was not paused."""
    result = connection.execute(sending_pause.delete().where(sending_pause.c.name == VENDOR))
    return result.rowcount > 0
