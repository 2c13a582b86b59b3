"""Password hashes for console users: argon2id (argon2-cffi's defaults: t=3, m=64 MiB, p=4).

A verify takes about 0.1 s on purpose; the console runs it in a worker thread. An unknown user is
verified against a dummy hash, so the answer takes as long as for a real user.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()  # argon2id


@functools.cache
def _dummy() -> str:
    return _HASHER.hash("propready-console-dummy-password")  # made once, on first use


MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


class PasswordRefused(ValueError):
    """A new password that cannot be used; the message says why (never the password)."""


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRefused(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRefused(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    return _HASHER.hash(check_new_password(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a missing hash is checked against a dummy (same time)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _HASHER.verify(password_hash or _dummy(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False
