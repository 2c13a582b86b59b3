"""The secret in the callback URL, checked without telling an attacker how close a guess was.

PlanOmatic signs nothing (planomatic-api.md 2.4), so the callback URL carries a secret token.
Both sides are hashed with SHA-256 first, so every comparison runs over 32 bytes whatever the
guess's length (`hmac.compare_digest` leaks the length of unequal inputs), and the guess is
compared with every valid token, the current one and the one being retired, even after a match:
the work done does not depend on which token matched, or on whether one did.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence


class TokenChecker:
    def __init__(
        self,
        tokens: Sequence[str],
        compare: Callable[[bytes, bytes], bool] = hmac.compare_digest,
    ) -> None:
        """`tokens`: every token a delivery may carry. `compare` is for tests that count calls."""
        if not tokens or not all(tokens):
            raise ValueError("at least one non-empty webhook token is required")
        self._digests = tuple(_digest(token) for token in tokens)
        self._compare = compare

    def is_valid(self, candidate: str | None) -> bool:
        return self.matching(candidate) is not None

    def matching(self, candidate: str | None) -> int | None:
        """The position of the token that matches (0 current, 1 previous), or None."""
        guess = _digest(candidate or "")
        found = None
        for position, expected in enumerate(self._digests):
            # No early exit: every token is compared, matched or not.
            if self._compare(guess, expected) and found is None:
                found = position
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).digest()
