"""Which rule set each daemon runs, as its audit rows say: what `propready check` reports.

The audit log already records every load, reload and refused reload with the host, so the
check reads the latest of those per host instead of keeping a second, separate status table.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from propready.adapters.store.schema import audit_log
from propready.core.audit_kinds import AuditKind

RULES_EVENTS = (AuditKind.RULES_LOADED, AuditKind.RULES_RELOADED, AuditKind.RULES_RELOAD_REFUSED)


def latest_rules_event_per_host(connection: sa.Connection) -> list[dict[str, Any]]:
    """For each host, its latest rules_loaded / rules_reloaded / rules_reload_refused row."""
    latest = (
        sa.select(sa.func.max(audit_log.c.id).label("id"))
        .where(audit_log.c.kind.in_(RULES_EVENTS))
        .group_by(audit_log.c.host)
        .subquery()
    )
    statement = (
        sa.select(audit_log).join(latest, audit_log.c.id == latest.c.id).order_by(audit_log.c.host)
    )
    return [dict(row) for row in connection.execute(statement).mappings()]
