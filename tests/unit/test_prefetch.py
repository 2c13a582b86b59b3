"""Reading ahead keeps the order, raises where the source raised, and stops the source early."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from propready.adapters.prefetch import prefetched


def test_items_arrive_in_order_and_all_of_them() -> None:
    """Everything the source yields comes through, in order."""
    assert list(prefetched(iter(range(100)), depth=2)) == list(range(100))


def test_an_error_in_the_source_is_raised_at_its_place() -> None:
    """Items before the error arrive; then the source's own exception is raised."""

    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("connection lost")

    stream = prefetched(source())
    assert [next(stream), next(stream)] == [1, 2]
    with pytest.raises(RuntimeError, match="connection lost"):
        next(stream)


def test_stopping_early_closes_the_source_in_its_own_thread() -> None:
    """A consumer that stops (the daemon is stopping) closes the source; nothing keeps reading."""
    closed_in: list[str] = []
    reader_threads: list[str] = []

    def source() -> Iterator[int]:
        try:
            n = 0
            while True:
                reader_threads.append(threading.current_thread().name)
                yield n
                n += 1
        finally:
            closed_in.append(threading.current_thread().name)

    stream = prefetched(source(), depth=1)
    assert next(stream) == 0
    stream.close()
    assert closed_in == ["propready-prefetch"]
    assert set(reader_threads) == {"propready-prefetch"}
    assert len(reader_threads) <= 3  # bounded read-ahead, then stopped
