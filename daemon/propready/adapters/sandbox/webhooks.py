"""The sandbox's webhook subscription: deliveries in order, retried, dropped, repeated on demand.

Like the vendor (planomatic-api.md 2.4): one queue per subscription, sent strictly in order; a
delivery that does not get a 2xx holds back every later one and is retried every
`retry_seconds`, up to `attempts` tries, then dropped with a log line saying the vendor would
e-mail the payload. Test knobs go beyond the vendor's good behaviour on purpose:

- `duplicates`: every delivered body is sent that many more times;
- `out_of_order`: two queued deliveries are sent newer first (a lone one waits up to
  `pair_wait_seconds` for a partner);
- `pause()` / `resume()`, `reverse()` (the queue back to front) and `resend(seq)` (an old
  delivery again, at the end of the queue), also over POST /_sandbox/webhooks.

The URL carries the receiver's token, so it is never logged: only its host is.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

logger = structlog.get_logger()

SEND_TIMEOUT_SECONDS = 10.0


@dataclass
class _Delivery:
    seq: int
    event: str
    order_id: Any
    body: bytes
    attempts: int = 0
    next_at: float = 0.0  # monotonic time of the next try
    times_delivered: int = 0  # 2xx answers so far (duplicates send it again)
    queued_at: float = field(default_factory=time.monotonic)


class WebhookSender:
    def __init__(
        self,
        url: str,
        *,
        retry_seconds: float = 360.0,
        attempts: int = 10,
        duplicates: int = 0,
        out_of_order: bool = False,
        pair_wait_seconds: float = 2.0,
        transport: httpx.BaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if retry_seconds < 0 or attempts < 1 or duplicates < 0:
            raise ValueError("retry_seconds >= 0, attempts >= 1 and duplicates >= 0 are required")
        self.url = url
        self.retry_seconds = retry_seconds
        self.attempts = attempts
        self.duplicates = duplicates
        self.out_of_order = out_of_order
        self.pair_wait_seconds = pair_wait_seconds
        self._monotonic = monotonic
        self._client = httpx.Client(
            timeout=SEND_TIMEOUT_SECONDS,
            trust_env=False,
            transport=transport,
            headers={"User-Agent": "propready-sandbox-webhooks"},
        )
        self._host = urlsplit(url).netloc
        self._condition = threading.Condition()
        self._queue: deque[_Delivery] = deque()
        self._sent: dict[int, _Delivery] = {}  # every delivery ever queued, by seq
        self._log: list[dict[str, Any]] = []  # one entry per try, oldest first
        self._next_seq = 1
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=SEND_TIMEOUT_SECONDS + 5)
        self._client.close()

    # --- publishing and control ---------------------------------------------------------------

    def publish(self, event: str, order_id: Any, body: dict[str, Any]) -> int:
        """Queue one delivery; its sequence number."""
        payload = json.dumps(body).encode("utf-8")
        with self._condition:
            delivery = _Delivery(self._next_seq, event, order_id, payload, queued_at=self._now())
            self._next_seq += 1
            self._sent[delivery.seq] = delivery
            self._queue.append(delivery)
            self._condition.notify_all()
            return delivery.seq

    def pause(self) -> None:
        with self._condition:
            self._paused = True

    def resume(self) -> None:
        with self._condition:
            self._paused = False
            self._condition.notify_all()

    def reverse(self) -> None:
        """Send what is queued back to front (newest first)."""
        with self._condition:
            self._queue.reverse()
            for delivery in self._queue:
                delivery.next_at = 0.0
            self._condition.notify_all()

    def resend(self, seq: int) -> None:
        """Queue an earlier delivery again, at the end (KeyError if there is none)."""
        with self._condition:
            old = self._sent[seq]
            copy = _Delivery(old.seq, old.event, old.order_id, old.body, queued_at=self._now())
            self._queue.append(copy)
            self._condition.notify_all()

    def set_duplicates(self, duplicates: int) -> None:
        if duplicates < 0:
            raise ValueError("duplicates must be 0 or more")
        with self._condition:
            self.duplicates = duplicates

    def status(self) -> dict[str, Any]:
        """What was sent and what waits: for tests and the control route."""
        with self._condition:
            return {
                "paused": self._paused,
                "queued": [
                    {"seq": d.seq, "event": d.event, "order_id": d.order_id, "attempts": d.attempts}
                    for d in self._queue
                ],
                "log": [dict(entry) for entry in self._log],
            }

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(min(remaining, 0.05))
            return True

    # --- the sending thread -------------------------------------------------------------------

    def _now(self) -> float:
        return self._monotonic()

    def _run(self) -> None:
        while True:
            with self._condition:
                delivery = self._next_due()
                while delivery is None and not self._stopping:
                    self._condition.wait(0.05)
                    delivery = self._next_due()
                if self._stopping:
                    return
            assert delivery is not None
            outcome = self._send(delivery)
            self._settle(delivery, outcome)

    def _next_due(self) -> _Delivery | None:
        """The delivery to try now, or None (paused, empty, or the head is waiting to retry)."""
        if self._paused or not self._queue:
            return None
        now = self._now()
        head = self._queue[0]
        if self.out_of_order and head.attempts == 0:
            if len(self._queue) >= 2 and self._queue[1].attempts == 0:
                return self._queue[1]  # the newer one first, then the older
            if now - head.queued_at < self.pair_wait_seconds:
                return None  # give it a moment to get a partner to overtake it
        return head if head.next_at <= now else None

    def _send(self, delivery: _Delivery) -> str:
        try:
            response = self._client.post(
                self.url, content=delivery.body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return str(response.status_code)

    def _settle(self, delivery: _Delivery, outcome: str) -> None:
        delivered = outcome.isdigit() and 200 <= int(outcome) < 300
        with self._condition:
            delivery.attempts += 1
            entry = {
                "seq": delivery.seq,
                "event": delivery.event,
                "order_id": delivery.order_id,
                "attempt": delivery.attempts,
                "outcome": outcome,
            }
            self._log.append(entry)
            if delivered:
                delivery.times_delivered += 1
                if delivery.times_delivered <= self.duplicates:
                    delivery.next_at = 0.0  # the same body again, right away
                else:
                    self._queue.remove(delivery)
            elif delivery.attempts >= self.attempts:
                self._queue.remove(delivery)
                entry["dropped"] = True
            else:
                delivery.next_at = self._now() + self.retry_seconds
            self._condition.notify_all()
        logger.info(
            "sandbox.webhook",
            seq=delivery.seq,
            webhook_event=delivery.event,
            order_id=delivery.order_id,
            attempt=delivery.attempts,
            outcome=outcome,
            receiver=self._host,
        )
        if entry.get("dropped"):
            logger.warning(
                "sandbox.webhook_dropped",
                seq=delivery.seq,
                webhook_event=delivery.event,
                order_id=delivery.order_id,
                attempts=delivery.attempts,
                note="gave up: PlanOmatic would email the payload to the notification address",
            )
