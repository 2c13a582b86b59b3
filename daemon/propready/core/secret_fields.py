"""Which fields of a vendor body are secret, and masking them before the body is stored.

A webhook body echoes the create request (planomatic-api.md 2.3), `property_access.access_code`
included, and a vendor may add more. Stored bodies are read by people (`propready webhooks
list`) and replayed, so secrets are masked first. A key is secret, at any depth, when its name
(lower case, `-` and spaces read as `_`)

- names a key, token or password: it contains `password`, `passcode`, `secret`, `token`,
  `api_key`, `apikey` or `authorization`, or is exactly `pin` or `pin_code`;
- names an access code: a word for a way in (`access`, `lockbox`, `keypad`, `gate`, `door`,
  `alarm`, `entry`, `garage`, `security`, `unlock`, `building`, `pin`, `key`) directly followed
  by `code` (`access_code`, `lockboxcode`, `gate_codes`, `slockboxcode`).

So `postal_code`, `country_code`, the envelope's `code` and `cancelation_reason` stay readable.
On-site contact names, phones and e-mails are personal data but not secrets: they stay, because
the person reading a stored delivery needs them as much as the vendor's portal shows them.

Masking replaces the value with `***` (None and empty values stay as they are), so the shape of
the body survives and a reader sees that something was there. Pure: no I/O.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

MASK = "***"
_SECRET_WORDS = re.compile(r"password|passcode|secret|token|api_?key|authorization")
_ACCESS_CODE = re.compile(
    r"(access|lock_?box|key_?pad|gate|door|alarm|entry|garage|security|unlock|building|pin|key)"
    r"_?codes?"
)
_PIN = frozenset({"pin", "pin_code", "pincode"})
# In text that is not valid JSON: a quoted secret key, a colon, then a quoted or bare value.
_TEXT_FIELD = re.compile(
    r'"(?P<key>[^"\\]{1,100})"\s*:\s*(?P<value>"(?:[^"\\]|\\.)*"|[^,{}\[\]\s"]+)'
)


@lru_cache(maxsize=4096)  # a vendor body repeats the same few dozen keys
def is_secret_key(name: str) -> bool:
    """Whether a field of this name holds a secret (module docstring)."""
    key = re.sub(r"[-\s]+", "_", name.strip().lower())
    return bool(key in _PIN or _SECRET_WORDS.search(key) or _ACCESS_CODE.search(key))


def redact_secrets(value: Any) -> Any:
    """A copy of a parsed JSON value with every secret field's value masked, at any depth."""
    if isinstance(value, dict):
        return {
            key: (MASK if _maskable(item) and is_secret_key(str(key)) else redact_secrets(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact_secrets(item) for item in value]
    return value


def redact_secret_text(text: str) -> str:
    """Mask `"secret_key": value` pairs in text that did not parse as JSON (best effort)."""

    def mask(match: re.Match[str]) -> str:
        if not is_secret_key(match.group("key")):
            return match.group(0)
        return f'"{match.group("key")}": "{MASK}"'

    return _TEXT_FIELD.sub(mask, text)


def _maskable(value: Any) -> bool:
    return value is not None and value != ""
