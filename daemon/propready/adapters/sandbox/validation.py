"""Pure checks of Order API request bodies, answered in the vendor's `{attr, message}` format.

A create body is checked by the contract shared with the planner and `propready check`
(`core.vendor_contract`); this module adds only what needs the sandbox's configuration: whether
the api_key exists and which billing entities it bills. Retrieve and cancel bodies are checked
here. No socket, clock or ledger: what needs stored orders (duplicates, unknown ids,
cancelability) is decided by the ledger. Every failing field is reported, in one list, because
the vendor answers all validation failures of a request together (planomatic-api.md 7 #6).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from propready.adapters.sandbox.config import SandboxConfig
from propready.core import vendor_contract

ValidationError = dict[str, str]

CANCELATION_REASONS = frozenset({"duplicate_order", "client_requested_cancelation"})
MAX_CANCEL_NOTES_LENGTH = 255

# Ids are bounded so a huge digit string cannot become an unbounded int.
_ID_TEXT = re.compile(r"\A[0-9]{1,18}\Z")


@dataclass(frozen=True)
class OrderRef:
    """Which stored order a retrieve or cancel names: by `order_id` or by `request_id`."""

    field: str
    value: int


def validate_create(body: Mapping[str, Any], config: SandboxConfig) -> list[ValidationError]:
    """Every validation failure of a create request; an empty list means the order is acceptable."""
    errors: list[ValidationError] = []
    linked_entities = _check_api_key(errors, body, config)
    # With an unusable key there is no way to know which entities it bills, so the key error
    # stands alone rather than adding a misleading `unauthorized` for the entity too.
    problems = vendor_contract.validate_create(
        body,
        config.catalog,
        linked_entities=linked_entities,
        allow_dash_in_metadata_keys=config.allow_dash_in_metadata_keys,
    )
    return errors + [problem.as_vendor_error() for problem in problems]


def validate_retrieve(
    body: Mapping[str, Any], config: SandboxConfig
) -> tuple[OrderRef | None, list[ValidationError]]:
    """The order a retrieve names, or the reasons it names none."""
    errors: list[ValidationError] = []
    _check_api_key(errors, body, config)
    ref = _order_ref(errors, body)
    return (ref if not errors else None), errors


def validate_cancel(
    body: Mapping[str, Any], config: SandboxConfig
) -> tuple[OrderRef | None, list[ValidationError]]:
    """The order a cancel names, or every reason the cancel request is malformed."""
    errors: list[ValidationError] = []
    _check_api_key(errors, body, config)
    ref = _order_ref(errors, body)
    reason = body.get("cancelation_reason")
    if reason is None:
        errors.append(_error("cancelation_reason", "missing"))
    elif not _is_one_of(reason, CANCELATION_REASONS):
        errors.append(_error("cancelation_reason", "unrecognized"))
    _check_text(errors, "notes", body.get("notes"), MAX_CANCEL_NOTES_LENGTH)
    return (ref if not errors else None), errors


def _error(attr: str, message: str) -> ValidationError:
    return {"attr": attr, "message": message}


def _is_one_of(value: Any, choices: frozenset[str]) -> bool:
    # The type check comes first: a JSON list or object is unhashable and would make `in` raise.
    return isinstance(value, str) and value in choices


def _check_api_key(
    errors: list[ValidationError], body: Mapping[str, Any], config: SandboxConfig
) -> frozenset[str] | None:
    """The billing entities linked to the key, or None when the key is not usable."""
    api_key = body.get("api_key")
    if api_key is None:
        errors.append(_error("api_key", "missing"))
        return None
    linked = config.api_keys.get(api_key) if isinstance(api_key, str) else None
    if linked is None:
        errors.append(_error("api_key", "unauthorized"))
    return linked


def _check_text(
    errors: list[ValidationError], attr: str, value: Any, max_length: int | None = None
) -> None:
    """A required string: present, a string, not blank, not over `max_length` when one is set."""
    if value is None:
        errors.append(_error(attr, "missing"))
    elif not isinstance(value, str):
        errors.append(_error(attr, "invalid"))
    elif not value.strip():
        errors.append(_error(attr, "empty"))
    elif max_length is not None and len(value) > max_length:
        errors.append(_error(attr, "too_long"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _order_ref(errors: list[ValidationError], body: Mapping[str, Any]) -> OrderRef | None:
    """`request_id` wins when both ids are sent, as the retrieve docs say."""
    for field_name in ("request_id", "order_id"):
        raw = body.get(field_name)
        if raw is None:
            continue
        value = _as_id(raw)
        if value is None:
            errors.append(_error(field_name, "unrecognized"))
            return None
        return OrderRef(field_name, value)
    errors.append(_error("order_id", "missing"))
    return None


def _as_id(raw: Any) -> int | None:
    """Ids arrive as integers (retrieve docs) or digit strings (cancel schema); accept both."""
    if _is_int(raw):
        return int(raw) if raw > 0 else None
    if isinstance(raw, str) and _ID_TEXT.match(raw):
        return int(raw)
    return None
