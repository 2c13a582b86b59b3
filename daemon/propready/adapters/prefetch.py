"""Reading ahead: the next batch is fetched while the current one is being decided.

A poll alternates between waiting for the database (the source streaming rows, on the server's
CPU and the network) and deciding in Python; doing both at once hides most of the waiting. The
producer thread owns the iterator for its whole life (a database cursor stays in one thread),
and at most `depth` batches wait in memory, so memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(source: Iterator[T], depth: int = 2) -> Generator[T, None, None]:
    """Yield what `source` yields, read up to `depth` items ahead in a background thread.

    An exception in `source` is raised here, at the item where it happened. Stopping early
    (closing this generator) stops the reader and closes `source` in the reader's thread.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False

    def read() -> None:
        try:
            for item in source:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_Raised(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="propready-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while reader.is_alive():  # let a reader blocked on a full queue see the stop
            try:
                handoff.get(timeout=0.05)
            except queue.Empty:
                continue
        reader.join()
