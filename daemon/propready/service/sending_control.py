"""Pausing and resuming sending by hand (`propready sending pause|resume`), audited.

The same pause the daemon sets when the vendor refuses the API key (service/send.py), but
without a key fingerprint: an operator's pause holds for every key until an operator resumes.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from propready.adapters.store import audit, sending
from propready.adapters.store.sending import SendingPause
from propready.core.audit_kinds import AuditKind


class SendingControlError(Exception):
    """The pause or resume cannot be done; the message says why."""


def pause_sending(state: sa.Engine, reason: str, by: str, now: datetime) -> None:
    if not reason.strip():
        raise SendingControlError("a --reason is required")
    with state.begin() as connection:
        sending.pause(
            connection, reason=f"paused by {by}: {reason}", key_fingerprint=None, by=by, now=now
        )
        audit.record(
            connection,
            AuditKind.SENDING_PAUSED,
            now,
            detail={"reason": "operator", "note": reason, "by": by},
        )


def resume_sending(state: sa.Engine, reason: str, by: str, now: datetime) -> SendingPause:
    """Lift the pause, whatever caused it; the pause that was lifted."""
    if not reason.strip():
        raise SendingControlError("a --reason is required")
    with state.begin() as connection:
        paused = sending.current_pause(connection)
        if paused is None:
            raise SendingControlError("sending is not paused")
        sending.resume(connection)
        audit.record(
            connection,
            AuditKind.SENDING_RESUMED,
            now,
            detail={"reason": "operator", "note": reason, "by": by, "was": paused.reason},
        )
    return paused


def sending_status(state: sa.Engine) -> SendingPause | None:
    with state.connect() as connection:
        return sending.current_pause(connection)
