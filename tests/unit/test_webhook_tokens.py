"""The webhook token check: every valid token compared every time, over fixed-length digests."""

from __future__ import annotations

import hmac

import pytest

from propready.receiver.tokens import TokenChecker

CURRENT = "current-token-0123456789abcdef"
PREVIOUS = "previous-token-0123456789abcdef"


class RecordingCompare:
    """hmac.compare_digest that remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls.append((a, b))
        return hmac.compare_digest(a, b)


@pytest.mark.parametrize(
    ("candidate", "valid"),
    [(CURRENT, True), (PREVIOUS, True), ("wrong", False), ("", False), (None, False),
     (CURRENT + "x", False), (CURRENT[:-1], False)],
)  # fmt: skip
def test_every_token_is_compared_whatever_the_guess(candidate: str | None, valid: bool) -> None:
    """Two comparisons for two tokens, matched first, second or not at all: no early exit."""
    compare = RecordingCompare()
    checker = TokenChecker([CURRENT, PREVIOUS], compare=compare)
    assert checker.is_valid(candidate) is valid
    assert len(compare.calls) == 2
    # Both sides are SHA-256 digests: the work does not depend on the guess's length.
    assert all(len(a) == 32 and len(b) == 32 for a, b in compare.calls)


def test_the_current_token_alone_after_a_rotation() -> None:
    """Without a previous token, only the current one is accepted."""
    checker = TokenChecker([CURRENT])
    assert checker.is_valid(CURRENT)
    assert not checker.is_valid(PREVIOUS)


def test_no_token_is_refused_at_construction() -> None:
    """A receiver without a token would accept nothing; it is a configuration error."""
    with pytest.raises(ValueError, match="token"):
        TokenChecker([])
    with pytest.raises(ValueError, match="token"):
        TokenChecker([""])


def test_which_token_matched_is_told_but_never_the_token() -> None:
    """0 for the current token, 1 for the previous one, None for neither: for the access log."""
    checker = TokenChecker([CURRENT, PREVIOUS])
    assert checker.matching(CURRENT) == 0
    assert checker.matching(PREVIOUS) == 1
    assert checker.matching("neither") is None
