"""The webhook listener's Starlette app.

`POST /webhooks/planomatic/{token}` (or `/webhooks/planomatic?token=...`), in this order:

1. a declared Content-Length over 1 MB: 413 before anything is read;
2. a token that is not valid: 401, the body unread, nothing stored;
3. the body, read up to 1 MB (a chunked body that goes over: 413, the rest never read);
4. `store`, which hands the body to the writer threads (`store_queue`: the event loop never
   waits on the database) and returns once it is committed:
   200 `{"status": "stored" | "duplicate" | "malformed"}`. Whatever the body holds, a valid
   token gets a 2xx once it is stored, because a non-2xx holds back every later delivery in
   the vendor's queue for about an hour (design.md 8.5);
5. storing failed (the database is down, locked, full): 503, so the vendor retries.

`GET /healthz`: 200 when the state database answers, else 503. `GET /metrics`: Prometheus text.
Both are meant for loopback: the reverse proxy forwards only the webhook path (RUNBOOK).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from propready.core.webhook_delivery import MAX_BODY_BYTES
from propready.receiver.access_log import (
    MATCHED_SLOT_KEY,
    OUTCOME_KEY,
    WEBHOOK_PREFIX,
    AccessLogMiddleware,
)
from propready.receiver.metrics import ServeMetrics
from propready.receiver.tokens import TokenChecker
from propready.service.webhook_intake import IntakeResult

log = structlog.get_logger("propready.serve")

_REFUSALS = {
    "too_large": (413, "the body is larger than 1 MB"),
    "unauthorized": (401, "unknown token"),
    "store_failed": (503, "the delivery could not be stored; retry later"),
}


def create_webhook_app(
    *,
    store: Callable[[bytes], Awaitable[IntakeResult]],
    tokens: TokenChecker,
    metrics: ServeMetrics,
    health_check: Callable[[], None],
) -> Starlette:
    """The app for `[webhooks] listen`. `store` keeps a body and returns once it is committed
    (`StoreQueue.store`); `health_check` raises when the state database does not answer (it
    runs in a worker thread)."""

    async def receive_delivery(request: Request) -> Response:
        started = time.perf_counter()
        if _declared_length(request) > MAX_BODY_BYTES:
            return _refuse(request, metrics, "too_large")
        token = request.path_params.get("token") or request.query_params.get("token")
        matched = tokens.matching(token)
        if matched is None:
            return _refuse(request, metrics, "unauthorized")
        # Which token was used (never the token): during a rotation, shows when the vendor
        # has moved to the new callback URL.
        request.scope[MATCHED_SLOT_KEY] = "current" if matched == 0 else "previous"
        try:
            raw = await request.body()
        except HTTPException as exc:  # the route's body limit, for a body without a length
            if exc.status_code != 413:
                raise
            return _refuse(request, metrics, "too_large")
        try:
            result = await store(raw)
        # Any failure to store, the database's or ours, must answer 5xx so the vendor retries.
        except Exception as exc:  # noqa: BLE001 - logged without locals below, answered 503
            _log_store_failure(exc)
            return _refuse(request, metrics, "store_failed")
        request.scope[OUTCOME_KEY] = result.outcome
        stored_at = time.time() if result.delivery_id is not None else None
        metrics.delivery(result.outcome, time.perf_counter() - started, stored_at)
        return JSONResponse({"status": result.outcome, "id": result.delivery_id})

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(health_check)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", said below
            body = {
                "status": "unhealthy",
                "healthy": False,
                "problems": [f"the state database does not answer ({type(exc).__name__})"],
            }
            return JSONResponse(body, status_code=503, headers={"Cache-Control": "no-store"})
        body = {"status": "ok", "healthy": True, "problems": []}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def metrics_text(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route(
            WEBHOOK_PREFIX + "/{token}",
            receive_delivery,
            methods=["POST"],
            max_body_size=MAX_BODY_BYTES,
        ),
        Route(WEBHOOK_PREFIX, receive_delivery, methods=["POST"], max_body_size=MAX_BODY_BYTES),
        # With a trailing slash too: a redirect would repeat the ?token= in its Location.
        Route(
            WEBHOOK_PREFIX + "/", receive_delivery, methods=["POST"], max_body_size=MAX_BODY_BYTES
        ),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(AccessLogMiddleware, "webhooks")])


def _declared_length(request: Request) -> int:
    try:
        return int(request.headers.get("content-length", "0"))
    except ValueError:
        return 0  # uvicorn refuses a malformed length itself; the streaming cap still holds


def _refuse(request: Request, metrics: ServeMetrics, outcome: str) -> Response:
    request.scope[OUTCOME_KEY] = outcome
    metrics.delivery(outcome)
    status, message = _REFUSALS[outcome]
    # Connection: close after a refusal with an unread body, so the rest is never read.
    headers = {"Connection": "close"} if outcome in ("too_large", "unauthorized") else None
    return Response(
        json.dumps({"status": outcome, "error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _log_store_failure(exc: BaseException) -> None:
    """The error's type, the driver's first line and the frames; never SQLAlchemy's own message
    (it quotes the statement's parameters, the body among them) or locals."""
    reason = None
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        reason = (str(exc.orig).strip().splitlines() or [""])[0][:200]
    log.error(
        "webhook_store_failed",
        error_type=type(exc).__name__,
        reason=reason,
        frames="".join(traceback.format_tb(exc.__traceback__)),
    )
