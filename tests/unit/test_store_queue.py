"""The writer threads between the event loop and the database: batches, results, failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from propready.receiver.store_queue import StoreQueue
from propready.service.webhook_intake import IntakeResult


class RecordingStore:
    """A store_many that records its batches; `gate` holds the first call until released."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, raws: Sequence[bytes]) -> list[IntakeResult | Exception]:
        self.gate.wait(10)
        self.batches.append(list(raws))
        return [
            ValueError("refused") if raw == b"bad" else IntakeResult("stored", index)
            for index, raw in enumerate(raws)
        ]


def test_each_delivery_gets_its_own_result() -> None:
    """A stored delivery returns its result; one the store refused raises its error."""
    store = RecordingStore()
    queue = StoreQueue(store, writers=1)

    async def main() -> tuple[IntakeResult, BaseException | None]:
        ok = await queue.store(b"ok")
        try:
            await queue.store(b"bad")
        except ValueError as exc:
            return ok, exc
        return ok, None

    try:
        ok, error = asyncio.run(main())
    finally:
        queue.close()
    assert ok == IntakeResult("stored", 0)
    assert isinstance(error, ValueError)


def test_deliveries_that_wait_are_stored_together() -> None:
    """While the writer is busy, arrivals queue up and go in one batch (group commit)."""
    store = RecordingStore()
    store.gate.clear()
    queue = StoreQueue(store, writers=1, max_batch=64)

    async def main() -> list[IntakeResult]:
        first = asyncio.ensure_future(queue.store(b"first"))
        await asyncio.sleep(0.1)  # the writer has taken `first` and waits at the gate
        rest = [asyncio.ensure_future(queue.store(f"d{n}".encode())) for n in range(10)]
        await asyncio.sleep(0.05)
        store.gate.set()
        return await asyncio.gather(first, *rest)

    try:
        results = asyncio.run(main())
    finally:
        queue.close()
    assert [len(batch) for batch in store.batches] == [1, 10]
    assert [result.outcome for result in results] == ["stored"] * 11


def test_a_store_that_raises_fails_every_delivery_of_its_batch() -> None:
    """An unexpected error reaches every waiting request (which answers 503)."""

    def broken(raws: Sequence[bytes]) -> list[IntakeResult | Exception]:
        raise RuntimeError("database gone")

    queue = StoreQueue(broken, writers=2)

    async def main() -> list[BaseException | IntakeResult]:
        return await asyncio.gather(*(queue.store(b"x") for _ in range(5)), return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        queue.close()
    assert all(isinstance(result, RuntimeError) for result in results)


def test_a_closed_queue_refuses_work_and_closing_twice_is_harmless() -> None:
    """After close() the writers are gone; a new delivery is refused, not left waiting."""
    queue = StoreQueue(RecordingStore(), writers=2)
    asyncio.run(queue.store(b"one"))
    queue.close()
    queue.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(queue.store(b"two"))


def test_bad_sizes_are_refused() -> None:
    """At least one writer and a batch of at least one."""
    with pytest.raises(ValueError, match="at least 1"):
        StoreQueue(RecordingStore(), writers=0)
