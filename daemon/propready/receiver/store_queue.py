"""From the event loop to the database: writer threads that store deliveries in batches.

The database calls are synchronous, so they must not run on the event loop. Handing each
delivery to a worker thread of its own costs a thread switch per delivery and lets dozens of
threads fight over a handful of database connections (and the GIL). Instead a request puts its
body on a queue and awaits a future; each of `writers` threads (one per pooled connection)
takes everything waiting, up to `max_batch`, stores it in one transaction (group commit), and
resolves the futures in one call back into the event loop. Nothing waits for a batch to fill:
a lone delivery is stored at once, and batches grow only while the database is busy.

A delivery's future resolves only after its transaction committed; an exception means it was
not stored (the receiver answers 503).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence

import structlog

from propready.service.webhook_intake import IntakeResult

log = structlog.get_logger("propready.serve")

StoreMany = Callable[[Sequence[bytes]], list[IntakeResult | Exception]]
_Item = tuple[bytes, "asyncio.Future[IntakeResult]", asyncio.AbstractEventLoop]
_Settled = list[tuple["asyncio.Future[IntakeResult]", IntakeResult | BaseException]]
MAX_BATCH = 64


class StoreQueue:
    def __init__(self, store_many: StoreMany, *, writers: int, max_batch: int = MAX_BATCH) -> None:
        if writers < 1 or max_batch < 1:
            raise ValueError("writers and max_batch must be at least 1")
        self._store_many = store_many
        self._writers = writers
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    async def store(self, raw: bytes) -> IntakeResult:
        """Store one delivery; returns once it is committed, raises if it was not stored."""
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IntakeResult] = loop.create_future()
        self._queue.put((raw, future, loop))
        return await future

    def close(self) -> None:
        """Stop the writers after what is queued; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout=30)

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("the store queue is closed")
        if self._threads:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("the store queue is closed")
            while len(self._threads) < self._writers:
                thread = threading.Thread(
                    target=self._write, name=f"propready-store-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _write(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._store(batch)
            if stop:
                return

    def _store(self, batch: list[_Item]) -> None:
        try:
            results: Sequence[IntakeResult | BaseException] = self._store_many(
                [raw for raw, _, _ in batch]
            )
        # Whatever went wrong, every waiting request must hear of it (and answer 503).
        except Exception as exc:  # noqa: BLE001 - handed to each request, which logs it
            results = [exc] * len(batch)
        by_loop: dict[
            asyncio.AbstractEventLoop,
            list[tuple[asyncio.Future[IntakeResult], IntakeResult | BaseException]],
        ] = {}
        for (_, future, loop), result in zip(batch, results, strict=True):
            by_loop.setdefault(loop, []).append((future, result))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.warning("store_queue_loop_closed", deliveries=len(settled))


def _settle(settled: _Settled) -> None:
    for future, result in settled:
        if future.done():  # the request was cancelled (the client hung up)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
