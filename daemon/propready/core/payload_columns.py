"""The source columns that feed the order payload: the planner's own table (pure data).

The planner builds the create body from this table, and the README's list of payload columns is
generated from it (`python -m propready.docs`), so the documentation cannot drift from the code:
a test fails when they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from propready.core.vendor_contract import (
    ACCESS_METHODS,
    MAX_ACCESS_TEXT_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    PROPERTY_TYPES,
)

Section = Literal["order", "location", "property", "access"]


@dataclass(frozen=True, slots=True)
class PayloadColumn:
    """One column the source query may return, and where its value goes in the create body."""

    name: str
    section: Section
    kind: str  # text | number | yes/no | date
    required: str  # when the vendor needs it
    allowed: str  # the values or format it accepts
    secret: bool = False  # never shown in hints, logs or the audit log

    @property
    def path(self) -> str:
        prefix = {
            "order": "",
            "location": "property.location.",
            "property": "property.",
            "access": "property_access.",
        }[self.section]
        return prefix + self.name


_METHODS = " \\| ".join(sorted(ACCESS_METHODS))
_TYPES = " \\| ".join(sorted(PROPERTY_TYPES))

PAYLOAD_COLUMNS: tuple[PayloadColumn, ...] = (
    PayloadColumn(
        "external_property_id", "order", "text", "always", f"your home id, 1-{MAX_ID_LENGTH} chars"
    ),
    PayloadColumn(
        "billing_entity_slug",
        "order",
        "text",
        "unless the rule sets `billing_entity_slug`",
        "an entity linked to your API key",
    ),
    PayloadColumn("street", "location", "text", "always", "not blank"),
    PayloadColumn("street2", "location", "text", "no", "unit or apartment"),
    PayloadColumn("city", "location", "text", "always", "not blank"),
    PayloadColumn(
        "state", "location", "text", "always", "two-letter US state or DC (`co` is read as `CO`)"
    ),
    PayloadColumn(
        "postal_code",
        "location",
        "text",
        "always",
        "`12345` or `12345-6789` (a whole number is zero-padded to 5 digits)",
    ),
    PayloadColumn("latitude", "location", "number", "no", "-90 to 90"),
    PayloadColumn("longitude", "location", "number", "no", "-180 to 180"),
    PayloadColumn("property_type", "property", "text", "no", f"{_TYPES} (others are left out)"),
    PayloadColumn("bedrooms", "property", "number", "no", "0 to 50"),
    PayloadColumn("bathrooms", "property", "number", "no", "0 to 50"),
    PayloadColumn("price", "property", "number", "no", "0 to 100,000,000"),
    PayloadColumn("square_footage", "property", "number", "no", "1 to 100,000"),
    PayloadColumn(
        "vacant",
        "access",
        "yes/no",
        "no (default: yes)",
        "true/false, 1/0, yes/no, t/f, vacant/occupied; no = occupied: `method_of_access` is "
        "then sent as `no_access_needed`",
    ),
    PayloadColumn(
        "method_of_access",
        "access",
        "text",
        "always",
        f"{_METHODS} (case and spaces are forgiven: `Lockbox Code` is `lockbox_code`)",
    ),
    PayloadColumn(
        "access_code",
        "access",
        "text",
        "for `lockbox_code` and `keypad`",
        f"up to {MAX_ACCESS_TEXT_LENGTH} chars; a secret, never logged or audited",
        secret=True,
    ),
    PayloadColumn(
        "lockbox_location",
        "access",
        "text",
        "for `lockbox_code`",
        f"up to {MAX_ACCESS_TEXT_LENGTH} chars",
        secret=True,
    ),
    PayloadColumn(
        "onsite_contact_name",
        "access",
        "text",
        "always",
        f"the person PlanOmatic calls, up to {MAX_ACCESS_TEXT_LENGTH} chars",
    ),
    PayloadColumn(
        "onsite_contact_phone",
        "access",
        "text",
        "always",
        "10 to 15 digits with the usual separators, e.g. `+1 555-555-5555`",
    ),
    PayloadColumn(
        "onsite_contact_email",
        "access",
        "text",
        "no",
        f"an email address, up to {MAX_EMAIL_LENGTH}",
    ),
    PayloadColumn(
        "preferred_date",
        "access",
        "date",
        "no",
        "a date (`YYYY-MM-DD` as text); past dates are fine",
    ),
)

COLUMNS_BY_PATH = {column.path: column for column in PAYLOAD_COLUMNS}
SECRET_COLUMNS = frozenset(c.name for c in PAYLOAD_COLUMNS if c.secret)


@dataclass(frozen=True, slots=True)
class AccessMethod:
    name: str
    needs: tuple[str, ...]  # the other columns this method requires
    meaning: str


ACCESS_METHOD_TABLE: tuple[AccessMethod, ...] = (
    AccessMethod(
        "lockbox_code", ("access_code", "lockbox_location"), "a lockbox: its code and where it is"
    ),
    AccessMethod("keypad", ("access_code",), "a door keypad: its code"),
    AccessMethod("rently", (), "a Rently smart lockbox"),
    AccessMethod(
        "no_access_needed",
        (),
        "nobody enters: for occupied homes, and only for services the catalog does not mark "
        "`access_required`",
    ),
)
assert {m.name for m in ACCESS_METHOD_TABLE} == ACCESS_METHODS
