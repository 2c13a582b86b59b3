"""Fault injection: the failures a real vendor and the network between produce, on demand.

A fault is queued per action (`create`, `retrieve`, `cancel`) and consumed by the next request
for that action, in order; then the sandbox behaves normally again. Kinds:

- `429`: answer rate-limit-exceeded; nothing saved.
- `500`: answer application-crash before saving (nothing saved).
- `502_html`: a proxy's HTML error page; nothing saved.
- `500_after_save`: save the order, then answer application-crash.
- `drop`: save the order, then close the connection without answering.
- `stall`: save the order, then answer nothing for `stall_seconds`, then close.

`500`, `502_html`, `500_after_save`, `drop` and `stall` are all ambiguous to a client: only the
sandbox's ledger tells which of them created an order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping

FAULT_KINDS = frozenset({"429", "500", "502_html", "500_after_save", "drop", "stall"})
SAVING_FAULTS = frozenset({"500_after_save", "drop", "stall"})
ACTIONS = frozenset({"create", "retrieve", "cancel"})


def parse_fault_spec(spec: str) -> tuple[str, list[str]]:
    """`create=429,drop` -> ("create", ["429", "drop"]); ValueError naming what is wrong."""
    action, sep, kinds_text = spec.partition("=")
    action = action.strip()
    if not sep or action not in ACTIONS:
        raise ValueError(
            f"{spec!r}: expected ACTION=KIND[,KIND...], ACTION one of {sorted(ACTIONS)}"
        )
    kinds = [k.strip() for k in kinds_text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if not kinds or unknown:
        raise ValueError(f"{spec!r}: fault kinds must be among {sorted(FAULT_KINDS)}")
    return action, kinds


class FaultQueue:
    """Pending faults per action; safe to use from the server's handler threads."""

    def __init__(self, initial: Mapping[str, Iterable[str]] | None = None) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, deque[str]] = {action: deque() for action in ACTIONS}
        for action, kinds in (initial or {}).items():
            self.add(action, kinds)

    def add(self, action: str, kinds: Iterable[str]) -> None:
        kinds = list(kinds)
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        if bad := [k for k in kinds if k not in FAULT_KINDS]:
            raise ValueError(f"unknown fault kinds {bad}")
        with self._lock:
            self._pending[action].extend(kinds)

    def take(self, action: str) -> str | None:
        with self._lock:
            queue = self._pending.get(action)
            return queue.popleft() if queue else None

    def pending(self) -> dict[str, list[str]]:
        with self._lock:
            return {action: list(queue) for action, queue in self._pending.items() if queue}
