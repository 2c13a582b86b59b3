"""The web console: server-rendered pages over the same service functions as the CLI.

Every page needs a logged-in user (a session cookie, or a trusted reverse proxy's user header);
viewers read, approvers also act on orders and attention items, admins also see the users. Every
POST carries the CSRF token and every action is audited with the user's name by the service
function that does it. Database work runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from propready.adapters.passwords import verify_password
from propready.adapters.planomatic import VendorError
from propready.adapters.rulefiles import (
    MAX_RULE_FILE_BYTES,
    MAX_RULE_FILES,
    MAX_RULE_SET_BYTES,
    RuleFileError,
)
from propready.adapters.source import SourceUnavailable
from propready.adapters.store import audit, console_secrets
from propready.adapters.store import console_users as users_store
from propready.adapters.store.console_pages import (
    DeliveryCursor,
    DeliveryFilter,
    OrderFilter,
    deliveries_page,
    orders_of_home,
    orders_page,
    spend_by_entity_month,
)
from propready.adapters.store.console_users import ConsoleUser
from propready.adapters.store.outbox import find_by_external_order_id
from propready.adapters.store.reachability import StateUnavailable, describe_state_failure
from propready.console.deps import ConsoleDeps, ReorderRequest
from propready.console.security import (
    COOKIE,
    CSRF_FIELD,
    LoginThrottle,
    SecurityHeaders,
    Session,
    SessionCodec,
    csrf_ok,
    is_loopback,
)
from propready.core.attention import format_age, parse_duration
from propready.core.audit_kinds import AuditKind
from propready.core.orders import CANCEL_REASONS, FINAL, OrderState
from propready.core.pricing import usd
from propready.core.rule_tests import actual_text, expected_text, run_rule_tests
from propready.log import REDACTOR, redact
from propready.report.story import summarise, trace_lines
from propready.report.svg import bar_chart
from propready.service.attention import AttentionError, attention_page, silence_item
from propready.service.console_users import UserError, set_disabled, set_password
from propready.service.operator import OrderActionError, approve, cancel, hold, resolve
from propready.service.reorder import ReorderRefused

PAGE_SIZE = 50
AUDIT_PAGE_SIZE = 100
STORY_LIMIT = 2000
CSV_CHUNK = 2000
SPEND_MONTHS = 12  # the spend page's default span (?months=N for more)
ATTENTION_SHOWN = 200  # items on the start page; `propready attention` lists them all
MAX_BODY = 64 * 1024
# Candidate rule files uploaded to the rules page: the rule loader's own bounds, plus the form.
UPLOAD_BODY = MAX_RULE_SET_BYTES + MAX_BODY
AUDIT_CSV_COLUMNS = (
    "id",
    "at",
    "kind",
    "external_property_id",
    "trigger_name",
    "rule_id",
    "external_order_id",
    "host",
    "detail",
)
DONE_MESSAGES = {
    "approved": "Approved {what}: the next send cycle sends it.",
    "held": "Held {what}: it waits for approval.",
    "canceled": "Canceled {what}.",
    "resolved": "Resolved {what}.",
    "reordered": "Reordered {what}; the next send cycle sends it (or it waits for approval).",
    "ack": "Acknowledged {what}: hidden until it changes.",
    "snooze": "Snoozed {what}.",
    "disabled": "Disabled {what}: their sessions ended.",
    "enabled": "Enabled {what}.",
    "password": "Set a new password for {what}: their sessions ended.",
}


class Refused(Exception):
    """An action the service refused; shown on the page (status 409)."""


@dataclass
class Visit:
    request: Request
    session: Session
    user: ConsoleUser | None
    https: bool
    address: str
    new_cookie: bool
    form: FormData | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def by(self) -> str:
        assert self.user is not None
        return self.user.name

    def field(self, name: str) -> str:
        value = self.form.get(name) if self.form is not None else None
        return value.strip() if isinstance(value, str) else ""


Handler = Callable[[Visit], Response]


def _dt(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return "" if value is None else str(value)


def _web_url(value: Any) -> str:
    """A link from vendor data, only if it is http(s): never javascript: or data:."""
    text = str(value or "")
    return text if text.lower().startswith(("https://", "http://")) else "#"


IMAGE_KINDS = frozenset({"photo", "photos", "image", "thumbnail"})
IMAGE_ENDINGS = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def _is_image(item: Any) -> bool:
    """Whether a delivered item is shown as a thumbnail (a photo), else as a link."""
    if str(getattr(item, "kind", "")).lower() in IMAGE_KINDS:
        return True
    path = str(getattr(item, "url", "")).split("?", 1)[0].lower()
    return path.endswith(IMAGE_ENDINGS)


def _day(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), time(), UTC)
    except ValueError:
        raise Refused(f"{name}: {text[:40]!r} is not a date (YYYY-MM-DD)") from None


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and len(text) < 19 else None


def _delivery_cursor(at: str, before: str) -> DeliveryCursor | None:
    """The deliveries page's `at` (an ISO time) and `before` (an order id), both or neither."""
    if not at and not before:
        return None
    order_id = _int(before)
    try:
        delivered_at = datetime.fromisoformat(at)
    except ValueError:
        delivered_at = None
    if order_id is None or delivered_at is None or delivered_at.tzinfo is None:
        raise Refused("at, before: not a page of this list (follow the page's own link)")
    return DeliveryCursor(delivered_at.astimezone(UTC), order_id)


def _raw(visit: Visit, name: str) -> str:
    """A form field as typed (a password: not stripped)."""
    value = visit.form.get(name) if visit.form is not None else None
    return value if isinstance(value, str) else ""


def _local_path(value: str) -> str:
    """Where to go after logging in: a path on this site only."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


class Console:
    def __init__(self, deps: ConsoleDeps) -> None:
        self.deps = deps
        self.config = deps.settings.console
        self.page_size = PAGE_SIZE
        self.audit_page_size = AUDIT_PAGE_SIZE
        secret = self.config.session_secret.get_secret_value() or self._stored_session_secret()
        self.codec = SessionCodec(secret, timedelta(hours=self.config.session_hours))
        self.throttle = LoginThrottle(
            self.config.login_max_failures,
            timedelta(minutes=self.config.login_lockout_minutes),
            deps.now,
        )
        self.templates = Environment(
            loader=PackageLoader("propready.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.filters["dt"] = _dt
        self.templates.filters["usd"] = usd
        self.templates.filters["web_url"] = _web_url
        self.templates.tests["image"] = _is_image

    def _stored_session_secret(self) -> str:
        """Not configured: the key generated once and kept in the state database, so every
        `serve` process (and a restart) accepts the others' cookies (design.md 8.5)."""
        try:
            secret = console_secrets.stored_secret(
                self.deps.state,
                console_secrets.SESSION_KEY,
                lambda: secrets.token_urlsafe(48),
                self.deps.now(),
            )
        except sa.exc.SQLAlchemyError as exc:  # `serve` prints the one line and exits
            url = self.deps.settings.state.url
            raise StateUnavailable(describe_state_failure(url, exc)) from None
        REDACTOR.add_values([secret])
        return secret

    # --- the ASGI app ---------------------------------------------------------------------------

    def app(self) -> ASGIApp:
        static = Path(__file__).parent / "static"
        routes = [
            Route("/login", self._login_page, methods=["GET"]),
            _post("/login", self._login),
            _post("/logout", self.page(self._logout, role="viewer")),
            Route("/", self.page(self._attention), methods=["GET"]),
            _post("/attention/ack", self.page(self._ack, role="act")),
            _post("/attention/snooze", self.page(self._snooze, role="act")),
            Route("/orders", self.page(self._orders), methods=["GET"]),
            Route("/orders/{order}", self.page(self._order), methods=["GET"]),
            _post("/orders/{order}/{action:str}", self.page(self._order_action, role="act")),
            Route("/homes/{home}", self.page(self._home), methods=["GET"]),
            _post("/homes/{home}/reorder", self.page(self._reorder, role="act")),
            Route("/deliveries", self.page(self._deliveries), methods=["GET"]),
            Route("/spend", self.page(self._spend), methods=["GET"]),
            Route("/rules", self.page(self._rules), methods=["GET"]),
            # Read-only (it sends and writes nothing), so viewers may compare too.
            _post("/rules/simulate", self.page(self._rules_simulate), limit=UPLOAD_BODY),
            Route("/audit", self.page(self._audit), methods=["GET"]),
            Route("/audit.csv", self.page(self._audit_csv), methods=["GET"]),
            Route("/users", self.page(self._users, role="admin"), methods=["GET"]),
            _post("/users/{name}/{action:str}", self.page(self._user_action, role="admin")),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ]
        return SecurityHeaders(Starlette(routes=routes, max_body_size=UPLOAD_BODY))

    # --- who is asking ----------------------------------------------------------------------------

    async def _visit(self, request: Request) -> Visit:
        peer = request.client.host if request.client else None
        trusted = self.config.is_trusted_proxy(peer)
        forwarded_proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
        https = request.url.scheme == "https" or (trusted and forwarded_proto == "https")
        address = peer or "?"
        if trusted:
            forwarded_for = request.headers.get("x-forwarded-for", "")
            address = forwarded_for.split(",")[-1].strip() or address
        session = self.codec.loads(request.cookies.get(COOKIE))
        new_cookie = session is None
        if session is None:
            session = Session.anonymous()
        user: ConsoleUser | None = None
        if self.config.auth == "proxy":
            name = request.headers.get(self.config.proxy_user_header, "").strip()
            if trusted and name:
                user = await run_in_threadpool(self._load_user, name)
                if user is not None and user.disabled:
                    user = None
        elif session.user is not None:
            user = await run_in_threadpool(self._load_user, session.user)
            if user is None or user.disabled or user.session_epoch != session.epoch:
                user = None
                session = Session.anonymous()  # ended: a password change, disabled, removed
                new_cookie = True
        return Visit(request, session, user, https, address, new_cookie)

    def _load_user(self, name: str) -> ConsoleUser | None:
        with self.deps.state.connect() as connection:
            return users_store.find(connection, name)

    def _finish(self, visit: Visit, response: Response) -> Response:
        if visit.new_cookie:
            peer = visit.request.client.host if visit.request.client else None
            response.set_cookie(
                COOKIE,
                self.codec.dumps(visit.session),
                max_age=self.codec.max_age,
                path="/",
                httponly=True,
                samesite="lax",
                secure=visit.https or (self.config.cookie_secure and not is_loopback(peer)),
            )
        return response

    def page(
        self, handler: Handler, *, role: str = "viewer"
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint: the visitor checked (CSRF on POST, logged in, role), then `handler` in
        a worker thread."""

        async def endpoint(request: Request) -> Response:
            visit = await self._visit(request)
            if request.method == "POST":
                visit.form = await request.form()
                if not csrf_ok(visit.session, visit.form.get(CSRF_FIELD)):
                    return self._finish(
                        visit,
                        self._refuse(
                            visit, 403, "missing or stale form token: reload the page and retry"
                        ),
                    )
            if visit.user is None:
                if self.config.auth == "proxy":
                    response = self._refuse(
                        visit,
                        403,
                        "not a console user: ask an admin to run `propready users add NAME "
                        "--role viewer --no-password` for the name your sign-in gives",
                    )
                elif request.method == "GET":
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    response = RedirectResponse(
                        "/login?" + urlencode({"next": target}), status_code=303
                    )
                else:
                    response = self._refuse(visit, 403, "log in first")
                return self._finish(visit, response)
            if role == "act" and not visit.user.can_act:
                return self._finish(
                    visit, self._refuse(visit, 403, "your role may read, not act (approver)")
                )
            if role == "admin" and not visit.user.is_admin:
                return self._finish(visit, self._refuse(visit, 403, "admins only"))
            try:
                response = await run_in_threadpool(handler, visit)
            finally:
                if visit.form is not None:
                    await visit.form.close()  # uploaded files are spooled to temporary files
            return self._finish(visit, response)

        return endpoint

    def render(self, visit: Visit, template: str, status: int = 200, **values: Any) -> Response:
        user = visit.user
        page = self.templates.get_template(template).render(
            user=user,
            can_act=user is not None and user.can_act,
            is_admin=user is not None and user.is_admin,
            csrf_field=CSRF_FIELD,
            csrf=visit.session.csrf,
            proxy_auth=self.config.auth == "proxy",
            path=visit.request.url.path,
            done=self._done(visit),
            **values,
        )
        return HTMLResponse(page, status_code=status)

    def _done(self, visit: Visit) -> str | None:
        message = DONE_MESSAGES.get(visit.request.query_params.get("done", ""))
        if message is None:
            return None
        return message.format(what=visit.request.query_params.get("what", "")[:200])

    def _refuse(self, visit: Visit, status: int, reason: str) -> Response:
        return self.render(visit, "refused.html", status=status, reason=reason)

    # --- logging in and out -----------------------------------------------------------------------

    async def _login_page(self, request: Request) -> Response:
        visit = await self._visit(request)
        if self.config.auth == "proxy" or visit.user is not None:
            return self._finish(visit, RedirectResponse("/", status_code=303))
        next_path = _local_path(request.query_params.get("next", "/"))
        return self._finish(visit, self.render(visit, "login.html", next=next_path))

    async def _login(self, request: Request) -> Response:
        visit = await self._visit(request)
        visit.form = await request.form()
        if not csrf_ok(visit.session, visit.form.get(CSRF_FIELD)):
            return self._finish(
                visit, self._refuse(visit, 403, "missing or stale form token: reload the page")
            )
        if self.config.auth == "proxy":
            return self._finish(visit, RedirectResponse("/", status_code=303))
        name = visit.field("name")[:100]
        password = visit.form.get("password")
        password = password if isinstance(password, str) else ""
        next_path = _local_path(visit.field("next") or "/")
        keys = (f"user:{name.lower()}", f"addr:{visit.address}")
        locked = self.throttle.locked_until(*keys)
        if locked is not None:
            await run_in_threadpool(
                self._audit_login, AuditKind.CONSOLE_LOGIN_FAILED, name, visit, "locked"
            )
            minutes = max(1, int((locked - self.deps.now()).total_seconds() // 60) + 1)
            error = f"Too many failed logins: try again in {minutes} minute(s)."
            response = self.render(visit, "login.html", 429, next=next_path, error=error)
            return self._finish(visit, response)
        user = await run_in_threadpool(self._load_user, name) if name else None
        hashed = user.password_hash if user is not None else None
        good = await run_in_threadpool(verify_password, hashed, password)
        if not good or user is None or user.disabled:
            self.throttle.failed(*keys)
            reason = "disabled" if good and user is not None else "wrong name or password"
            await run_in_threadpool(
                self._audit_login, AuditKind.CONSOLE_LOGIN_FAILED, name, visit, reason
            )
            response = self.render(
                visit, "login.html", 401, next=next_path, error="Wrong name or password."
            )
            return self._finish(visit, response)
        self.throttle.succeeded(keys[0])
        visit.session = Session(user.name, user.session_epoch, secrets.token_urlsafe(32))
        visit.new_cookie = True
        visit.user = user
        await run_in_threadpool(self._audit_login, AuditKind.CONSOLE_LOGIN, user.name, visit, "")
        return self._finish(visit, RedirectResponse(next_path, status_code=303))

    def _audit_login(self, kind: AuditKind, name: str, visit: Visit, reason: str) -> None:
        detail: dict[str, Any] = {"user": name, "address": visit.address}
        if reason:
            detail["reason"] = reason
        with self.deps.state.begin() as connection:
            audit.record(connection, kind, self.deps.now(), detail=detail)

    def _logout(self, visit: Visit) -> Response:
        """Ends every session of this user (the epoch rises), so a copied cookie dies too."""
        if self.config.auth == "password":
            with self.deps.state.begin() as connection:
                users_store.update(connection, visit.by, self.deps.now())
        self._audit_login(AuditKind.CONSOLE_LOGOUT, visit.by, visit, "")
        visit.session = Session.anonymous()
        visit.new_cookie = True
        return RedirectResponse("/login", status_code=303)

    # --- attention ------------------------------------------------------------------------------

    def _attention(self, visit: Visit, error: str | None = None, status: int = 200) -> Response:
        now = self.deps.now()
        page = attention_page(self.deps.state, self.deps.settings, now, ATTENTION_SHOWN)
        rows = [
            {
                "key": entry.item.key,
                "kind": entry.item.kind.value,
                "since": entry.item.since,
                "age": format_age(entry.item.age(now)),
                "overdue": entry.overdue,
                "home": entry.item.external_property_id,
                "order": entry.item.external_order_id,
                "what": entry.item.what,
                "action": entry.item.action,
            }
            for entry in page.listed
        ]
        return self.render(
            visit, "attention.html", status, rows=rows, total=page.total, error=error
        )

    def _ack(self, visit: Visit) -> Response:
        return self._silence(visit, None)

    def _snooze(self, visit: Visit) -> Response:
        return self._silence(visit, visit.field("for") or "?")

    def _silence(self, visit: Visit, snooze_for: str | None) -> Response:
        item = visit.field("item")
        try:
            duration = parse_duration(snooze_for) if snooze_for is not None else None
            silence_item(
                self.deps.state,
                self.deps.settings,
                item,
                reason=visit.field("reason"),
                by=visit.by,
                now=self.deps.now(),
                snooze_for=duration,
            )
        except (AttentionError, ValueError) as exc:
            return self._attention(visit, error=REDACTOR.scrub_text(str(exc)), status=409)
        done = "ack" if snooze_for is None else "snooze"
        return RedirectResponse("/?" + urlencode({"done": done, "what": item}), status_code=303)

    # --- orders ---------------------------------------------------------------------------------

    def _orders(self, visit: Visit) -> Response:
        query = visit.request.query_params
        state = query.get("state", "")
        filters = {k: query.get(k, "").strip() for k in ("entity", "rule", "since", "until")}
        try:
            where = OrderFilter(
                state=state if state in {s.value for s in OrderState} else None,
                billing_entity_slug=filters["entity"] or None,
                rule_id=filters["rule"] or None,
                since=_day(filters["since"], "since"),
                until=_day(filters["until"], "until"),
            )
        except Refused as exc:
            return self.render(
                visit,
                "orders.html",
                400,
                orders=[],
                next_url=None,
                error=str(exc),
                states=[s.value for s in OrderState],
                state=state,
                filters=filters,
            )
        with self.deps.state.connect() as connection:
            found, next_id = orders_page(
                connection, where, before_id=_int(query.get("before")), limit=self.page_size
            )
        next_url = None
        if next_id is not None:
            kept = {k: v for k, v in {"state": state, **filters}.items() if v}
            next_url = "/orders?" + urlencode({**kept, "before": next_id})
        return self.render(
            visit,
            "orders.html",
            orders=found,
            next_url=next_url,
            states=[s.value for s in OrderState],
            state=state,
            filters=filters,
            error=None,
        )

    def _order(self, visit: Visit, error: str | None = None, status: int = 200) -> Response:
        external_order_id = visit.request.path_params["order"]
        with self.deps.state.connect() as connection:
            order = find_by_external_order_id(connection, external_order_id)
            if order is None:
                return self._refuse(visit, 404, f"no order {external_order_id!r}")
            rows = audit.query_events(
                connection, external_order_id=external_order_id, limit=STORY_LIMIT
            )
            delivered = list(self.deps.deliverables(connection, order.id))
        payload = json.dumps(redact(order.payload), indent=2, sort_keys=True, default=str)
        return self.render(
            visit,
            "order.html",
            status,
            order=order,
            payload=payload,
            story=[self._story_row(row) for row in rows],
            deliverables=delivered,
            cancel_reasons=CANCEL_REASONS,
            cancelable=order.state not in FINAL,
            resolvable=order.state in (OrderState.UNKNOWN, OrderState.PLACED),
            error=error,
        )

    def _order_action(self, visit: Visit) -> Response:
        external_order_id = visit.request.path_params["order"]
        action = visit.request.path_params["action"]
        deps = self.deps
        try:
            if action == "approve":
                over = visit.field("over_budget") == "yes"
                approve(
                    deps.state,
                    external_order_id,
                    deps.now(),
                    visit.by,
                    budgets=deps.budgets,
                    zone=deps.settings.source.zone,
                    over_budget_reason=visit.field("reason") or None if over else None,
                )
                done = "approved"
            elif action == "hold":
                hold(deps.state, external_order_id, visit.field("reason"), deps.now(), visit.by)
                done = "held"
            elif action == "cancel":
                with deps.vendor() as client:
                    cancel(
                        deps.state,
                        client,
                        external_order_id,
                        visit.field("reason"),
                        visit.field("notes"),
                        deps.now(),
                        visit.by,
                    )
                done = "canceled"
            elif action == "resolve":
                not_placed = visit.field("outcome") == "not_placed"
                with deps.vendor() as client:
                    resolve(
                        deps.state,
                        client,
                        external_order_id,
                        deps.now(),
                        visit.by,
                        vendor_order_id=None if not_placed else visit.field("vendor_order_id"),
                        not_placed=not_placed,
                    )
                done = "resolved"
            else:
                return self._refuse(visit, 404, f"no action {action!r}")
        except (OrderActionError, VendorError) as exc:
            return self._order(visit, error=REDACTOR.scrub_text(str(exc)), status=409)
        except RuleFileError as exc:  # a budget-held order is re-checked against the rules
            problem = REDACTOR.scrub_text(str(exc.problems[0])) if exc.problems else "unreadable"
            error = f"the rule files cannot be loaded, so budgets cannot be re-checked: {problem}"
            return self._order(visit, error=error, status=409)
        target = f"/orders/{external_order_id}?" + urlencode(
            {"done": done, "what": external_order_id}
        )
        return RedirectResponse(target, status_code=303)

    # --- deliveries -----------------------------------------------------------------------------

    def _deliveries(self, visit: Visit) -> Response:
        query = visit.request.query_params
        filters = {k: query.get(k, "").strip() for k in ("entity", "since", "until")}
        try:
            where = DeliveryFilter(
                billing_entity_slug=filters["entity"] or None,
                since=_day(filters["since"], "since"),
                until=_day(filters["until"], "until"),
            )
            before = _delivery_cursor(query.get("at", ""), query.get("before", ""))
        except Refused as exc:
            return self.render(
                visit,
                "deliveries.html",
                400,
                rows=[],
                next_url=None,
                filters=filters,
                error=str(exc),
            )
        with self.deps.state.connect() as connection:
            found, cursor = deliveries_page(connection, where, before=before, limit=self.page_size)
        next_url = None
        if cursor is not None:
            kept = {k: v for k, v in filters.items() if v}
            next_url = "/deliveries?" + urlencode(
                {**kept, "at": cursor.delivered_at.isoformat(), "before": cursor.order_id}
            )
        return self.render(
            visit, "deliveries.html", rows=found, next_url=next_url, filters=filters, error=None
        )

    # --- a home's story -------------------------------------------------------------------------

    def _story_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        detail = row.get("detail") if isinstance(row.get("detail"), Mapping) else {}
        assert isinstance(detail, Mapping)
        return {
            "id": row["id"],
            "at": row["at"],
            "kind": row["kind"],
            "home": row.get("external_property_id"),
            "trigger_name": row.get("trigger_name"),
            "rule_id": row.get("rule_id"),
            "external_order_id": row.get("external_order_id"),
            "summary": summarise(row),
            "trace": trace_lines(detail.get("trace")),
            "detail": json.dumps(redact(detail), indent=2, sort_keys=True, default=str),
        }

    def _home(self, visit: Visit, error: str | None = None, status: int = 200) -> Response:
        home = visit.request.path_params["home"]
        with self.deps.state.connect() as connection:
            rows = audit.query_events(connection, external_property_id=home, limit=STORY_LIMIT)
            home_orders = orders_of_home(connection, home, 200)
            delivered = {o.id: list(self.deps.deliverables(connection, o.id)) for o in home_orders}
        if not rows and not home_orders:
            return self._refuse(visit, 404, f"nothing recorded for home {home!r}")
        return self.render(
            visit,
            "home.html",
            status,
            home=home,
            story=[self._story_row(row) for row in rows],
            truncated=len(rows) >= STORY_LIMIT,
            orders=home_orders,
            deliverables=delivered,
            error=error,
        )

    def _reorder(self, visit: Visit) -> Response:
        home = visit.request.path_params["home"]
        request = ReorderRequest(
            external_property_id=home,
            reason=visit.field("reason"),
            by=visit.by,
            ignore_window=visit.field("ignore_window") == "yes",
        )
        try:
            done = self.deps.reorder(request)
        except ReorderRefused as exc:
            return self._home(visit, error=f"cannot reorder {home}: {exc}", status=409)
        what = f"{home} ({done.external_order_id}, {done.state})"
        target = f"/homes/{home}?" + urlencode({"done": "reordered", "what": what})
        return RedirectResponse(target, status_code=303)

    # --- spend, rules, audit, users ---------------------------------------------------------------

    def _spend(self, visit: Visit) -> Response:
        months = _int(visit.request.query_params.get("months")) or SPEND_MONTHS
        months = max(1, min(months, 120))
        today = self.deps.now().astimezone(UTC).date()
        first = date(today.year, today.month, 1)
        for _ in range(months - 1):
            first = (first - timedelta(days=1)).replace(day=1)
        with self.deps.state.connect() as connection:
            rows = spend_by_entity_month(connection, first)
        month_names = sorted({r["month"] for r in rows})
        entities = sorted({r["billing_entity_slug"] for r in rows})
        by_key = {(r["billing_entity_slug"], r["month"]): r for r in rows}

        def series(column: str, scale: float) -> dict[str, list[float]]:
            return {
                e: [
                    float(by_key[(e, m)][column]) / scale if (e, m) in by_key else 0
                    for m in month_names
                ]
                for e in entities
            }

        charts = [
            _svg(
                bar_chart(
                    "Spend per month, by billing entity (USD)",
                    month_names,
                    series("spend_cents", 100),
                )
            ),
            _svg(
                bar_chart(
                    "Orders placed per month, by billing entity",
                    month_names,
                    series("orders", 1),
                )
            ),
        ]
        return self.render(
            visit, "spend.html", rows=rows, charts=charts, months=months, since=first
        )

    def _rules(self, visit: Visit, status: int = 200, **compared: Any) -> Response:
        compared = {"diff": None, "candidate_problems": [], "compare_error": None, **compared}
        try:
            rule_set, catalog = self.deps.rules()
        except RuleFileError as exc:
            problems = [REDACTOR.scrub_text(str(p)) for p in exc.problems]
            return self.render(
                visit, "rules.html", rule_set=None, problems=problems, tests=[], **compared
            )
        outcomes = run_rule_tests(
            rule_set, self.deps.settings.source.zone, self.deps.now(), catalog
        )
        tests = [
            {
                "name": o.test.name,
                "location": str(o.test.location),
                "passed": o.passed,
                "expected": expected_text(o.test),
                "actual": actual_text(o),
                "differences": list(o.differences),
            }
            for o in outcomes
        ]
        return self.render(
            visit, "rules.html", status, rule_set=rule_set, problems=[], tests=tests, **compared
        )

    def _rules_simulate(self, visit: Visit) -> Response:
        """Uploaded candidate rule files compared with the live ones (`simulate --rules`)."""
        try:
            sources = _uploaded_rule_files(visit.form)
            diff = self.deps.compare_rules(sources)
        except Refused as exc:
            return self._rules(visit, 400, compare_error=str(exc))
        except RuleFileError as exc:
            problems = [REDACTOR.scrub_text(str(p)) for p in exc.problems]
            return self._rules(visit, 400, candidate_problems=problems)
        except SourceUnavailable as exc:
            error = f"the PM database cannot be read: {REDACTOR.scrub_text(str(exc))}"
            return self._rules(visit, 503, compare_error=error)
        return self._rules(visit, diff=diff)

    def _audit_filters(self, visit: Visit) -> tuple[dict[str, str], dict[str, Any]]:
        query = visit.request.query_params
        names = ("property", "kind", "rule", "entity", "order", "since", "until")
        shown = {name: query.get(name, "").strip() for name in names}
        kind = shown["kind"]
        if kind and kind not in {k.value for k in AuditKind}:
            raise Refused(f"kind: unknown audit kind {kind[:60]!r}")
        args: dict[str, Any] = {
            "external_property_id": shown["property"] or None,
            "kinds": [kind] if kind else [],
            "rule_id": shown["rule"] or None,
            "billing_entity_slug": shown["entity"] or None,
            "external_order_id": shown["order"] or None,
            "since": _day(shown["since"], "since"),
            "until": _day(shown["until"], "until"),
        }
        return shown, args

    def _audit(self, visit: Visit) -> Response:
        kinds = sorted(k.value for k in AuditKind)
        try:
            shown, args = self._audit_filters(visit)
        except Refused as exc:
            return self.render(
                visit,
                "audit.html",
                400,
                rows=[],
                filters={},
                kinds=kinds,
                next_url=None,
                csv_url="/audit.csv",
                error=str(exc),
            )
        before = _int(visit.request.query_params.get("before"))
        with self.deps.state.connect() as connection:
            rows = audit.query_events(
                connection,
                **args,
                limit=self.audit_page_size + 1,
                newest_first=True,
                before_id=before,
            )
        kept = {k: v for k, v in shown.items() if v}
        next_url = None
        if len(rows) > self.audit_page_size:
            rows = rows[: self.audit_page_size]
            next_url = "/audit?" + urlencode({**kept, "before": rows[-1]["id"]})
        return self.render(
            visit,
            "audit.html",
            rows=[self._story_row(row) for row in rows],
            filters=shown,
            kinds=kinds,
            next_url=next_url,
            csv_url="/audit.csv" + (f"?{urlencode(kept)}" if kept else ""),
            error=None,
        )

    def _audit_csv(self, visit: Visit) -> Response:
        try:
            _shown, args = self._audit_filters(visit)
        except Refused as exc:
            return self._refuse(visit, 400, str(exc))
        state = self.deps.state

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(AUDIT_CSV_COLUMNS)
            after = None
            while True:
                with state.connect() as connection:
                    rows = audit.query_events(connection, **args, limit=CSV_CHUNK, after_id=after)
                for row in rows:
                    values = {
                        **row,
                        "detail": json.dumps(
                            redact(row.get("detail") or {}), sort_keys=True, default=str
                        ),
                    }
                    writer.writerow([_csv_cell(values.get(c)) for c in AUDIT_CSV_COLUMNS])
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                if len(rows) < CSV_CHUNK:
                    return
                after = rows[-1]["id"]

        return StreamingResponse(
            lines(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="propready-audit.csv"'},
        )

    def _users(self, visit: Visit, error: str | None = None, status: int = 200) -> Response:
        with self.deps.state.connect() as connection:
            found = users_store.list_users(connection)
        return self.render(
            visit,
            "users.html",
            status,
            users=found,
            password_auth=self.config.auth == "password",
            error=error,
        )

    def _user_action(self, visit: Visit) -> Response:
        """An admin disables, enables or resets the password of a user: the same service
        functions as `propready users`, audited with the admin's name."""
        name = visit.request.path_params["name"]
        action = visit.request.path_params["action"]
        now = self.deps.now()
        try:
            if action in ("disable", "enable"):
                if action == "disable" and name == visit.by:
                    raise UserError("you cannot disable yourself (another admin can)")
                set_disabled(self.deps.state, name, action == "disable", by=visit.by, now=now)
                done = f"{action}d"
            elif action == "password":
                if self.config.auth != "password":
                    raise UserError('passwords are not used with auth = "proxy"')
                first, second = _raw(visit, "password"), _raw(visit, "password2")
                if first != second:
                    raise UserError("the two passwords differ: type the same one twice")
                set_password(self.deps.state, name, first, by=visit.by, now=now)
                done = "password"
            else:
                return self._refuse(visit, 404, f"no action {action!r}")
        except UserError as exc:
            return self._users(visit, error=f"{name[:100]}: {exc}", status=409)
        target = "/users?" + urlencode({"done": done, "what": name})
        return RedirectResponse(target, status_code=303)


def _post(
    path: str, endpoint: Callable[[Request], Awaitable[Response]], limit: int = MAX_BODY
) -> Route:
    return Route(path, endpoint, methods=["POST"], max_body_size=limit)


RULE_FILE_SUFFIXES = (".yaml", ".yml")


def _uploaded_rule_files(form: FormData | None) -> list[tuple[str, str]]:
    """(name, text) of each uploaded rule file, or of the pasted text; Refused with the reason.

    Bounded like rule files on disk: each file, their total and their number.
    """
    uploads = [u for u in (form.getlist("files") if form else []) if isinstance(u, UploadFile)]
    sources = [_uploaded(upload) for upload in uploads if upload.filename]  # "" = no file chosen
    pasted = form.get("text") if form else None
    if isinstance(pasted, str) and pasted.strip():
        if len(pasted.encode("utf-8")) > MAX_RULE_FILE_BYTES:
            raise Refused(f"the pasted rule file is larger than {MAX_RULE_FILE_BYTES:,} bytes")
        sources.append(("candidate/pasted.yaml", pasted.replace("\r\n", "\n")))
    if not sources:
        raise Refused("choose one or more candidate rule files (.yaml), or paste one")
    if len(sources) > MAX_RULE_FILES:
        raise Refused(f"{len(sources)} rule files (at most {MAX_RULE_FILES})")
    if sum(len(text.encode("utf-8")) for _, text in sources) > MAX_RULE_SET_BYTES:
        raise Refused(f"the rule files together are larger than {MAX_RULE_SET_BYTES:,} bytes")
    return sources


def _uploaded(upload: UploadFile) -> tuple[str, str]:
    name = Path((upload.filename or "").replace("\\", "/")).name[:100]
    if not name.endswith(RULE_FILE_SUFFIXES):
        raise Refused(f"{name}: not a rule file (.yaml)")
    data = upload.file.read(MAX_RULE_FILE_BYTES + 1)
    if len(data) > MAX_RULE_FILE_BYTES:
        raise Refused(f"{name}: larger than {MAX_RULE_FILE_BYTES:,} bytes")
    try:
        return f"candidate/{name}", data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(f"{name}: not UTF-8 text") from None


def _svg(text: str) -> Markup:
    """A chart from report.svg, which escapes every text it puts in the SVG."""
    return Markup(text)  # noqa: S704


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    # A cell that a spreadsheet would run as a formula is prefixed (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def create_console_app(deps: ConsoleDeps) -> ASGIApp:
    return Console(deps).app()


__all__ = ["Console", "ConsoleDeps", "create_console_app"]
