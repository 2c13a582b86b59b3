"""Pure checks of Order API request bodies, answered in the vendor's `{attr, message}` format.

No socket, clock or ledger here: what needs stored orders (duplicates, unknown ids, cancelability)
is decided by the ledger. Every failing field is reported, in one list, because the vendor answers
all validation failures of a request together (planomatic-api.md section 7 #6).

Keywords where the contract is silent, applied the same way to every field:
- absent or JSON `null`: `missing` (for required fields; optional ones are then skipped);
- wrong JSON type: `invalid` (enums and numbers say `unrecognized` instead);
- a blank string in a required text field: `empty` (whitespace counts as blank, as the
  vendor's Rails-style presence checks would);
- over a documented length: `too_long`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from propready.adapters.sandbox.config import SandboxConfig
from propready.core.catalog import Catalog

ValidationError = dict[str, str]

# The 50 states and DC, as the vendor's "two-letter US state abbreviation" (capitalised).
# fmt: off
US_STATES = frozenset({
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY",
})
# fmt: on
PROPERTY_TYPES = frozenset(
    {"single_family", "condo_townhouse", "duplex_townhouse", "commercial", "land"}
)
NUMERIC_PROPERTY_FIELDS = ("bedrooms", "bathrooms", "price", "square_footage")
ACCESS_METHODS = frozenset({"lockbox_code", "keypad", "rently", "no_access_needed"})
METHODS_NEEDING_CODE = frozenset({"lockbox_code", "keypad"})
CANCELATION_REASONS = frozenset({"duplicate_order", "client_requested_cancelation"})

MAX_ID_LENGTH = 255
MAX_ACCESS_TEXT_LENGTH = 255
MAX_EMAIL_LENGTH = 254
MAX_ORDER_NOTES_LENGTH = 1000
MAX_CANCEL_NOTES_LENGTH = 255
MAX_METADATA_KEYS = 4
MAX_METADATA_KEY_LENGTH = 60
MAX_METADATA_VALUE_LENGTH = 255

_METADATA_KEY = re.compile(r"\A[A-Za-z0-9_]+\Z")
_METADATA_KEY_WITH_DASH = re.compile(r"\A[A-Za-z0-9_-]+\Z")
_NUMERIC_TEXT = re.compile(r"\A-?[0-9]+(\.[0-9]+)?\Z")
_ISO_DATE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
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
    _check_text(errors, "external_property_id", body.get("external_property_id"), MAX_ID_LENGTH)
    _check_billing_entity(errors, body.get("billing_entity_slug"), linked_entities)
    _check_property(errors, body.get("property"))
    _check_services(errors, body.get("services"), config.catalog)
    _check_property_access(errors, body.get("property_access"))
    _check_metadata(errors, body.get("metadata"), config.allow_dash_in_metadata_keys)
    _check_optional_text(errors, "external_order_id", body.get("external_order_id"), MAX_ID_LENGTH)
    _check_optional_text(errors, "order_notes", body.get("order_notes"), MAX_ORDER_NOTES_LENGTH)
    return errors


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


def _check_billing_entity(
    errors: list[ValidationError], slug: Any, linked_entities: frozenset[str] | None
) -> None:
    if slug is None:
        errors.append(_error("billing_entity_slug", "missing"))
    elif not isinstance(slug, str):
        errors.append(_error("billing_entity_slug", "invalid"))
    # With an unusable key there is no way to know which entities it bills, so the key error
    # stands alone rather than adding a misleading second one here.
    elif linked_entities is not None and slug not in linked_entities:
        errors.append(_error("billing_entity_slug", "unauthorized"))


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


def _check_optional_text(
    errors: list[ValidationError], attr: str, value: Any, max_length: int | None = None
) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        errors.append(_error(attr, "invalid"))
    elif max_length is not None and len(value) > max_length:
        errors.append(_error(attr, "too_long"))


def _object(errors: list[ValidationError], attr: str, value: Any) -> Mapping[str, Any] | None:
    """A required nested object; the vendor writes object paths as `name{}`."""
    if value is None:
        errors.append(_error(f"{attr}{{}}", "missing"))
        return None
    if not isinstance(value, Mapping):
        errors.append(_error(f"{attr}{{}}", "invalid"))
        return None
    return value


def _check_property(errors: list[ValidationError], value: Any) -> None:
    prop = _object(errors, "property", value)
    if prop is None:
        return
    location = _object(errors, "property.location", prop.get("location"))
    if location is not None:
        _check_location(errors, location)
    property_type = prop.get("property_type")
    if property_type is not None and not _is_one_of(property_type, PROPERTY_TYPES):
        errors.append(_error("property.property_type", "unrecognized"))
    for name in NUMERIC_PROPERTY_FIELDS:
        number = prop.get(name)
        if number is not None and not _is_number(number):
            errors.append(_error(f"property.{name}", "unrecognized"))


def _check_location(errors: list[ValidationError], location: Mapping[str, Any]) -> None:
    for name in ("street", "city"):
        _check_text(errors, f"property.location.{name}", location.get(name))
    state = location.get("state")
    if state is None:
        errors.append(_error("property.location.state", "missing"))
    elif not _is_one_of(state, US_STATES):
        errors.append(_error("property.location.state", "unrecognized"))
    # Only `missing` is public for the postal code; its format rules are not, so none are invented.
    _check_text(errors, "property.location.postal_code", location.get("postal_code"))


def _is_number(value: Any) -> bool:
    """Numbers or numeric strings: the vendor's own V2 payloads send counts and prices as text."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and _NUMERIC_TEXT.match(value.strip()) is not None


def _check_services(errors: list[ValidationError], value: Any, catalog: Catalog) -> None:
    if value is None:
        errors.append(_error("services", "missing"))
    elif not isinstance(value, list):
        errors.append(_error("services", "invalid"))
    elif not value:
        errors.append(_error("services", "empty"))
    else:
        for index, item in enumerate(value):
            _check_service_item(errors, f"services[{index}]", item, catalog)


def _check_service_item(
    errors: list[ValidationError], attr: str, item: Any, catalog: Catalog
) -> None:
    if not isinstance(item, Mapping):
        errors.append(_error(attr, "invalid"))
        return
    slug = item.get("slug")
    service = catalog.get(slug) if isinstance(slug, str) else None
    if slug is None:
        errors.append(_error(f"{attr}.slug", "missing"))
    elif service is None:
        errors.append(_error(f"{attr}.slug", "unrecognized"))
    quantity = item.get("quantity")
    if quantity is None:
        errors.append(_error(f"{attr}.quantity", "missing"))
    elif not _is_int(quantity) or (service is not None and not service.accepts_quantity(quantity)):
        errors.append(_error(f"{attr}.quantity", "unrecognized"))
    for field_name in service.required_fields if service is not None else ():
        extra = item.get(field_name)
        if extra is None or (isinstance(extra, str) and not extra.strip()):
            errors.append(_error(f"{attr}.{field_name}", "missing"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_property_access(errors: list[ValidationError], value: Any) -> None:
    access = _object(errors, "property_access", value)
    if access is None:
        return
    vacant = access.get("vacant")
    if vacant is None:
        errors.append(_error("property_access.vacant", "missing"))
    elif not isinstance(vacant, bool):
        errors.append(_error("property_access.vacant", "invalid"))
    method = access.get("method_of_access")
    if method is None:
        errors.append(_error("property_access.method_of_access", "missing"))
    elif not _is_one_of(method, ACCESS_METHODS):
        errors.append(_error("property_access.method_of_access", "unrecognized"))
    _check_access_details(errors, access, method)
    preferred_date = access.get("preferred_date")
    if preferred_date is not None and not _is_iso_date(preferred_date):
        errors.append(_error("property_access.preferred_date", "unrecognized"))


def _check_access_details(
    errors: list[ValidationError], access: Mapping[str, Any], method: Any
) -> None:
    # Lengths are PlanOcore's; the phone has no published limit, so it gets none.
    def check(name: str, required: bool, max_length: int | None = MAX_ACCESS_TEXT_LENGTH) -> None:
        attr, value = f"property_access.{name}", access.get(name)
        if required:
            _check_text(errors, attr, value, max_length)
        else:
            _check_optional_text(errors, attr, value, max_length)

    check("access_code", required=_is_one_of(method, METHODS_NEEDING_CODE))
    check("lockbox_location", required=method == "lockbox_code")
    check("onsite_contact_name", required=True)
    check("onsite_contact_phone", required=True, max_length=None)
    check("onsite_contact_email", required=False, max_length=MAX_EMAIL_LENGTH)


def _is_iso_date(value: Any) -> bool:
    if not isinstance(value, str) or _ISO_DATE.match(value) is None:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:  # well-shaped but impossible, e.g. 2026-02-30
        return False
    return True


def _check_metadata(errors: list[ValidationError], value: Any, allow_dash: bool) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        errors.append(_error("metadata", "invalid"))
        return
    if len(value) > MAX_METADATA_KEYS:
        errors.append(_error("metadata", "too_many_keys"))
    key_pattern = _METADATA_KEY_WITH_DASH if allow_dash else _METADATA_KEY
    for key, entry in value.items():
        # One error per entry: a bad key makes its value's state beside the point.
        attr = f"metadata.{key}"
        if key_pattern.match(key) is None:
            errors.append(_error(attr, "invalid"))
        elif len(key) > MAX_METADATA_KEY_LENGTH:
            errors.append(_error(attr, "too_long"))
        elif not isinstance(entry, str):
            errors.append(_error(attr, "invalid"))
        elif len(entry) > MAX_METADATA_VALUE_LENGTH:
            errors.append(_error(attr, "too_long"))


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
