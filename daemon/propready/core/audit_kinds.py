"""Every kind of audit row, in one enum: the writers, the CLI and the analyst views share it.

A kind is part of the analysts' interface (the views in migrations/ match on these names, and
`propready audit --kind` filters by them), so a kind is never renamed; new ones are added here.
"""

from __future__ import annotations

from enum import StrEnum


class AuditKind(StrEnum):
    # readiness and decisions
    TRIGGER_FIRED = "trigger_fired"
    RULE_MATCHED = "rule_matched"
    NO_RULE_MATCHED = "no_rule_matched"
    ORDER_NOT_PLANNABLE = "order_not_plannable"
    ORDER_PLANNED_DRY_RUN = "order_planned_dry_run"
    DUPLICATE_BLOCKED = "duplicate_blocked"
    # a readiness that stayed open: planned again, closed, reopened, or reordered by a person
    READINESS_REPLANNED = "readiness_replanned"
    READINESS_CLOSED = "readiness_closed"
    READINESS_REOPENED = "readiness_reopened"
    REORDER_REQUESTED = "reorder_requested"
    BUDGET_EXCEEDED = "budget_exceeded"  # a budget with when_exceeded: skip refused the order
    # the order outbox
    ORDER_CREATED = "order_created"
    ORDER_SENDING = "order_sending"
    ORDER_PLACED = "order_placed"
    ORDER_REJECTED = "order_rejected"
    ORDER_FAILED = "order_failed"
    ORDER_RETRY_SCHEDULED = "order_retry_scheduled"
    ORDER_RESEND_SCHEDULED = "order_resend_scheduled"
    ORDER_OUTCOME_UNKNOWN = "order_outcome_unknown"
    ORDER_OUTCOME_AFTER_LEASE_LOST = "order_outcome_after_lease_lost"
    ORDER_PARKED = "order_parked"
    # operators and the vendor's news
    ORDER_APPROVED = "order_approved"
    ORDER_HELD = "order_held"
    ORDER_CANCELED = "order_canceled"
    ORDER_RESOLVED = "order_resolved"
    ORDER_STATUS_CHANGED = "order_status_changed"
    ORDER_PRICE_REPORTED = "order_price_reported"  # the vendor's price replaced the estimate
    ORDER_DELIVERED = "order_delivered"
    ORDER_UNABLE_TO_COMPLETE = "order_unable_to_complete"
    ORDER_CANCELED_BY_VENDOR = "order_canceled_by_vendor"
    WRITEBACK_DONE = "writeback_done"
    WRITEBACK_FAILED = "writeback_failed"
    WRITEBACK_RETRY_REQUESTED = "writeback_retry_requested"  # `propready writeback retry`
    # sending as a whole (the vendor refused the API key, or an operator paused it)
    SENDING_PAUSED = "sending_paused"
    SENDING_RESUMED = "sending_resumed"
    # the source
    SOURCE_ROW_QUARANTINED = "source_row_quarantined"
    SOURCE_ROW_RELEASED = "source_row_released"
    SOURCE_CURSOR_SUSPICIOUS = "source_cursor_suspicious"
    SOURCE_UNAVAILABLE = "source_unavailable"  # once per outage
    SOURCE_RECOVERED = "source_recovered"
    # rules and configuration
    RULES_LOADED = "rules_loaded"
    RULES_RELOADED = "rules_reloaded"
    RULES_RELOAD_REFUSED = "rules_reload_refused"
    CONFIG_RELOADED = "config_reloaded"
    CONFIG_RELOAD_REFUSED = "config_reload_refused"
    # people: attention items acknowledged or snoozed (`propready attention ack|snooze`)
    ATTENTION_ACKNOWLEDGED = "attention_acknowledged"
    ATTENTION_SNOOZED = "attention_snoozed"
    # the web console: its users (`propready users ...`) and logins
    CONSOLE_USER_ADDED = "console_user_added"
    CONSOLE_USER_REMOVED = "console_user_removed"
    CONSOLE_USER_PASSWORD_CHANGED = "console_user_password_changed"  # noqa: S105 (a kind)
    CONSOLE_USER_DISABLED = "console_user_disabled"
    CONSOLE_USER_ENABLED = "console_user_enabled"
    CONSOLE_LOGIN = "console_login"
    CONSOLE_LOGIN_FAILED = "console_login_failed"
    CONSOLE_LOGOUT = "console_logout"
