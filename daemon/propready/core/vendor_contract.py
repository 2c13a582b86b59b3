"""The vendor's rules for a create-order body, checked the way PlanOmatic would (pure).

One validator, shared by the planner (an order that would be refused is not planned), `check`
and `simulate` (pre-flight), and the sandbox (which answers with the same problems as 400s). It
returns every problem at once, each in the vendor's own `{attr, message}` form
(planomatic-api.md 1.1, 4 and 7 #6/#10/#17/#19), plus a hint for people that never carries a
secret value.

What stays outside: the api_key (only the vendor's key store knows it) and whether a billing
entity is linked to the key (the caller passes the linked entities when it knows them, as the
sandbox does).

Keywords where the contract is silent, applied the same way to every field:
- absent or JSON `null`: `missing` (for required fields; optional ones are then skipped);
- wrong JSON type: `invalid` (enums and numbers say `unrecognized` instead);
- a blank string in a required text field: `empty` (whitespace counts as blank, as the
  vendor's Rails-style presence checks would);
- over a documented length: `too_long`;
- a value of the right type that is not an allowed value or format (a state, a postal code, a
  phone number, a date, a slug, a quantity): `unrecognized`;
- a valid value in a combination the vendor forbids: `not_allowed` (an occupied home with an
  access method other than `no_access_needed`) and `access_required` (services that need entry,
  such as interior photos, ordered with `no_access_needed`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from propready.core.catalog import Catalog

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
NO_ACCESS = "no_access_needed"

MAX_ID_LENGTH = 255
MAX_ACCESS_TEXT_LENGTH = 255
MAX_EMAIL_LENGTH = 254
MAX_ORDER_NOTES_LENGTH = 1000
MAX_METADATA_KEYS = 4
MAX_METADATA_KEY_LENGTH = 60
MAX_METADATA_VALUE_LENGTH = 255

_METADATA_KEY = re.compile(r"\A[A-Za-z0-9_]+\Z")
_METADATA_KEY_WITH_DASH = re.compile(r"\A[A-Za-z0-9_-]+\Z")
_NUMERIC_TEXT = re.compile(r"\A-?[0-9]+(\.[0-9]+)?\Z")
_ISO_DATE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
POSTAL_CODE = re.compile(r"\A[0-9]{5}(-[0-9]{4})?\Z")  # 12345 or ZIP+4 12345-6789
# A phone a person can dial: digits with the usual separators, an optional leading + and an
# optional extension; 10 to 15 digits before the extension (a US number, up to E.164's length).
_PHONE = re.compile(r"\A\+?[0-9 ().-]+((x|ext\.?)\s*[0-9]{1,6})?\Z", re.IGNORECASE)
_EMAIL = re.compile(r"\A[^@\s]+@[^@\s]+\.[^@\s]+\Z")
_COORDINATE_RANGES = {"latitude": 90, "longitude": 180}


@dataclass(frozen=True, slots=True)
class ContractProblem:
    """One field the vendor would refuse: `attr` and `message` are its own words."""

    attr: str
    message: str
    hint: str = ""  # for people; never a secret value

    def as_vendor_error(self) -> dict[str, str]:
        return {"attr": self.attr, "message": self.message}

    def __str__(self) -> str:
        return f"{self.attr}: {self.message}" + (f" ({self.hint})" if self.hint else "")


def validate_create(
    body: Mapping[str, Any],
    catalog: Catalog,
    *,
    linked_entities: Collection[str] | None = None,
    allow_dash_in_metadata_keys: bool = False,
) -> list[ContractProblem]:
    """Every problem the vendor would report for this create body (api_key aside); [] = valid.

    `linked_entities`: the billing entities the key may bill, when the caller knows them; a
    slug outside them is `unauthorized`. Problems come in the vendor's field order.
    """
    found = _Problems()
    _check_text(found, "external_property_id", body.get("external_property_id"), MAX_ID_LENGTH)
    _check_billing_entity(found, body.get("billing_entity_slug"), linked_entities)
    _check_property(found, body.get("property"))
    services = _check_services(found, body.get("services"), catalog)
    _check_property_access(found, body.get("property_access"), services, catalog)
    _check_metadata(found, body.get("metadata"), allow_dash_in_metadata_keys)
    _check_optional_text(found, "external_order_id", body.get("external_order_id"), MAX_ID_LENGTH)
    _check_optional_text(found, "order_notes", body.get("order_notes"), MAX_ORDER_NOTES_LENGTH)
    return found.items


class _Problems:
    def __init__(self) -> None:
        self.items: list[ContractProblem] = []

    def add(self, attr: str, message: str, hint: str = "") -> None:
        self.items.append(ContractProblem(attr, message, hint))


def shown(value: Any) -> str:
    """A value quoted for a hint, cut short: only for fields that are not secret."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_one_of(value: Any, choices: frozenset[str]) -> bool:
    # The type check comes first: a JSON list or object is unhashable and would make `in` raise.
    return isinstance(value, str) and value in choices


def _check_billing_entity(
    found: _Problems, slug: Any, linked_entities: Collection[str] | None
) -> None:
    if slug is None:
        found.add("billing_entity_slug", "missing")
    elif not isinstance(slug, str):
        found.add("billing_entity_slug", "invalid", "expected text")
    elif not slug.strip():
        found.add("billing_entity_slug", "empty")
    elif linked_entities is not None and slug not in linked_entities:
        found.add("billing_entity_slug", "unauthorized", "not linked to this api key")


def _check_text(
    found: _Problems,
    attr: str,
    value: Any,
    max_length: int | None = None,
    missing_hint: str = "",
) -> None:
    """A required string: present, a string, not blank, not over `max_length` when one is set."""
    if value is None:
        found.add(attr, "missing", missing_hint)
    elif not isinstance(value, str):
        found.add(attr, "invalid", "expected text")
    elif not value.strip():
        found.add(attr, "empty")
    elif max_length is not None and len(value) > max_length:
        found.add(attr, "too_long", f"{len(value)} characters, at most {max_length}")


def _check_optional_text(
    found: _Problems, attr: str, value: Any, max_length: int | None = None
) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        found.add(attr, "invalid", "expected text")
    elif max_length is not None and len(value) > max_length:
        found.add(attr, "too_long", f"{len(value)} characters, at most {max_length}")


def _object(found: _Problems, attr: str, value: Any) -> Mapping[str, Any] | None:
    """A required nested object; the vendor writes object paths as `name{}`."""
    if value is None:
        found.add(f"{attr}{{}}", "missing")
        return None
    if not isinstance(value, Mapping):
        found.add(f"{attr}{{}}", "invalid", "expected an object")
        return None
    return value


def _check_property(found: _Problems, value: Any) -> None:
    prop = _object(found, "property", value)
    if prop is None:
        return
    location = _object(found, "property.location", prop.get("location"))
    if location is not None:
        _check_location(found, location)
    property_type = prop.get("property_type")
    if property_type is not None and not _is_one_of(property_type, PROPERTY_TYPES):
        allowed = ", ".join(sorted(PROPERTY_TYPES))
        found.add(
            "property.property_type", "unrecognized", f"{shown(property_type)} is not {allowed}"
        )
    for name in NUMERIC_PROPERTY_FIELDS:
        number = prop.get(name)
        if number is not None and not is_number(number):
            found.add(f"property.{name}", "unrecognized", f"{shown(number)} is not a number")


def _check_location(found: _Problems, location: Mapping[str, Any]) -> None:
    for name in ("street", "city"):
        _check_text(found, f"property.location.{name}", location.get(name))
    _check_optional_text(found, "property.location.street2", location.get("street2"))
    state = location.get("state")
    if state is None:
        found.add("property.location.state", "missing")
    elif not _is_one_of(state, US_STATES):
        found.add(
            "property.location.state",
            "unrecognized",
            f"{shown(state)} is not a two-letter US state in capitals",
        )
    postal_code = location.get("postal_code")
    _check_text(found, "property.location.postal_code", postal_code)
    if isinstance(postal_code, str) and postal_code.strip() and not POSTAL_CODE.match(postal_code):
        found.add(
            "property.location.postal_code",
            "unrecognized",
            f"{shown(postal_code)} is not a 5-digit ZIP code or ZIP+4 (12345 or 12345-6789)",
        )
    for name, limit in _COORDINATE_RANGES.items():
        value = location.get(name)
        if value is None:
            continue
        number = _as_float(value)
        if number is None or not -limit <= number <= limit:
            found.add(
                f"property.location.{name}",
                "unrecognized",
                f"{shown(value)} is not a number from -{limit} to {limit}",
            )


def is_number(value: Any) -> bool:
    """Numbers or numeric strings: the vendor's own V2 payloads send counts and prices as text."""
    return _as_float(value) is not None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and _NUMERIC_TEXT.match(value.strip()) is not None:
        return float(value)
    return None


def _check_services(found: _Problems, value: Any, catalog: Catalog) -> list[str]:
    """Check the services list; return the slugs that name catalog services."""
    if value is None:
        found.add("services", "missing", "the rule orders nothing")
        return []
    if not isinstance(value, list):
        found.add("services", "invalid", "expected a list")
        return []
    if not value:
        found.add("services", "empty", "the rule orders nothing")
        return []
    known: list[str] = []
    for index, item in enumerate(value):
        slug = _check_service_item(found, f"services[{index}]", item, catalog)
        if slug is not None:
            known.append(slug)
    return known


def _check_service_item(found: _Problems, attr: str, item: Any, catalog: Catalog) -> str | None:
    if not isinstance(item, Mapping):
        found.add(attr, "invalid", "expected an object with slug and quantity")
        return None
    slug = item.get("slug")
    service = catalog.get(slug) if isinstance(slug, str) else None
    if slug is None:
        found.add(f"{attr}.slug", "missing")
    elif service is None:
        found.add(f"{attr}.slug", "unrecognized", f"{shown(slug)} is not in the service catalog")
    quantity = item.get("quantity")
    if quantity is None:
        found.add(f"{attr}.quantity", "missing")
    elif not _is_int(quantity) or (service is not None and not service.accepts_quantity(quantity)):
        allowed = (
            ", ".join(map(str, sorted(service.quantities))) or "any positive whole number"
            if service is not None
            else "a positive whole number"
        )
        found.add(
            f"{attr}.quantity",
            "unrecognized",
            f"{slug if isinstance(slug, str) else 'the service'} does not take {shown(quantity)}"
            f" (allowed: {allowed})",
        )
    for field_name in service.required_fields if service is not None else ():
        extra = item.get(field_name)
        if extra is None or (isinstance(extra, str) and not extra.strip()):
            found.add(f"{attr}.{field_name}", "missing", f"{slug} needs {field_name}")
    return slug if service is not None else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_property_access(
    found: _Problems, value: Any, slugs: list[str], catalog: Catalog
) -> None:
    access = _object(found, "property_access", value)
    if access is None:
        return
    vacant = access.get("vacant")
    if vacant is None:
        found.add("property_access.vacant", "missing")
    elif not isinstance(vacant, bool):
        found.add("property_access.vacant", "invalid", "expected true or false")
    method = access.get("method_of_access")
    if method is None:
        found.add("property_access.method_of_access", "missing")
    elif not _is_one_of(method, ACCESS_METHODS):
        allowed = " | ".join(sorted(ACCESS_METHODS))
        found.add(
            "property_access.method_of_access", "unrecognized", f"{shown(method)} is not {allowed}"
        )
    elif vacant is False and method != NO_ACCESS:
        found.add(
            "property_access.method_of_access",
            "not_allowed",
            f"an occupied home (vacant false) takes only {NO_ACCESS}, not {method}",
        )
    elif method == NO_ACCESS:
        needing_entry = sorted({s for s in slugs if _needs_access(catalog, s)})
        if needing_entry:
            verb = "needs" if len(needing_entry) == 1 else "need"
            why = (
                "the home is occupied (vacant false), so nobody may enter"
                if vacant is False
                else f"{NO_ACCESS} gives none"
            )
            found.add(
                "property_access.method_of_access",
                "access_required",
                f"{', '.join(needing_entry)} {verb} entry to the home; {why}",
            )
    _check_access_details(found, access, method)
    preferred_date = access.get("preferred_date")
    if preferred_date is not None and not _is_iso_date(preferred_date):
        found.add(
            "property_access.preferred_date",
            "unrecognized",
            f"{shown(preferred_date)} is not a YYYY-MM-DD date",
        )


def _needs_access(catalog: Catalog, slug: str) -> bool:
    service = catalog.get(slug)
    return service is not None and service.access_required


def _check_access_details(found: _Problems, access: Mapping[str, Any], method: Any) -> None:
    # Lengths are PlanOcore's; the phone has no published limit, only a plausible shape.
    def check(
        name: str, required: bool, max_length: int | None = MAX_ACCESS_TEXT_LENGTH, hint: str = ""
    ) -> bool:
        """Whether the field passed (or was absent and optional)."""
        attr, value = f"property_access.{name}", access.get(name)
        before = len(found.items)
        if required:
            _check_text(found, attr, value, max_length, hint)
        else:
            _check_optional_text(found, attr, value, max_length)
        return len(found.items) == before

    needed_for = f"required for {method}"
    check("access_code", _is_one_of(method, METHODS_NEEDING_CODE), hint=needed_for)
    check("lockbox_location", method == "lockbox_code", hint=needed_for)
    check("onsite_contact_name", True)
    phone = access.get("onsite_contact_phone")
    if check("onsite_contact_phone", required=True, max_length=None) and not _plausible_phone(
        phone
    ):
        found.add(
            "property_access.onsite_contact_phone",
            "unrecognized",
            "not a phone number with 10 to 15 digits, such as +1 555-555-5555",
        )
    email = access.get("onsite_contact_email")
    passed = check("onsite_contact_email", required=False, max_length=MAX_EMAIL_LENGTH)
    if passed and email is not None and not _EMAIL.match(email):
        found.add("property_access.onsite_contact_email", "unrecognized", "not an email address")


def _plausible_phone(phone: Any) -> bool:
    if not isinstance(phone, str):
        return False
    text = phone.strip()
    if not _PHONE.match(text):
        return False
    # Digits before the extension ("x" or "ext"), which is not part of the number.
    digits = sum(c.isdigit() for c in text.lower().partition("x")[0])
    return 10 <= digits <= 15


def _is_iso_date(value: Any) -> bool:
    if not isinstance(value, str) or _ISO_DATE.match(value) is None:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:  # well-shaped but impossible, e.g. 2026-02-30
        return False
    return True


def _check_metadata(found: _Problems, value: Any, allow_dash: bool) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        found.add("metadata", "invalid", "expected an object of text values")
        return
    if len(value) > MAX_METADATA_KEYS:
        found.add("metadata", "too_many_keys", f"{len(value)} keys, at most {MAX_METADATA_KEYS}")
    key_pattern = _METADATA_KEY_WITH_DASH if allow_dash else _METADATA_KEY
    for key, entry in value.items():
        # One problem per entry: a bad key makes its value's state beside the point.
        attr = f"metadata.{key}"
        if not isinstance(key, str) or key_pattern.match(key) is None:
            found.add(attr, "invalid", "keys use only A-Z, a-z, 0-9 and _")
        elif len(key) > MAX_METADATA_KEY_LENGTH:
            found.add(attr, "too_long", f"keys have at most {MAX_METADATA_KEY_LENGTH} characters")
        elif not isinstance(entry, str):
            found.add(attr, "invalid", "values are text")
        elif len(entry) > MAX_METADATA_VALUE_LENGTH:
            found.add(
                attr, "too_long", f"values have at most {MAX_METADATA_VALUE_LENGTH} characters"
            )
