"""Vendor news: what a webhook body or a retrieve answer says about one order, as a typed record.

PlanOmatic has not published its V3 webhook keys (planomatic-api.md 2.3 and 7 #13), so the parser
is tolerant and accepts, for the same record:

- the flat shape of the seed's retrieve example: `{order_id, external_order_id, order_status,
  event, appointments, links, photos, ...}`;
- the nested shape: `{event, event_datetime, order: {...order..., assets: {photos: [...]}}}`;
- a retrieve answer's envelope: `{code, status: "action-successful", data: {...order...}}`;
- V2 names where they cost nothing: `links.tour_link` (kept like any link), `order_datetime`
  (the order's creation time), `external_id`, `property_info.property_id`, an appointment's
  `duration` in hours and `cancellation_reason` with two l's.

Unknown keys and events are kept (`extra`, `event`), never fatal. A value of the wrong type is
dropped and named in `problems`. Only input that cannot be news about an order at all is
`MalformedNews` with a reason: not a JSON object, nested deeper than `MAX_DEPTH`, more than
`MAX_VALUES` values, or naming no order. `parse_vendor_news` never raises on any JSON value.

The input is the parsed JSON (`json.loads`); reading bytes, size limits and redaction happen
before (`core.webhook_delivery`). Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from propready.core.vendor_status import effective_status, normalise_status, status_rank

MAX_DEPTH = 32  # the vendor's bodies are about five levels deep
MAX_VALUES = 100_000  # objects, lists and scalars together
MAX_PHOTOS = 2_000
MAX_APPOINTMENTS = 200
MAX_TEXT = 2_000  # captions, names, notes: longer text is cut
MAX_URL = 4_096
MAX_ID = 64

_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Epoch seconds are accepted only inside a plausible range (2000 to 2100).
_EPOCH_RANGE = (946_684_800, 4_102_444_800)

# Keys of the order object this parser reads; every other key goes to `extra`.
_ORDER_KEYS = frozenset(
    {
        "order_id",
        "request_id",
        "legacy_order_id",
        "external_order_id",
        "external_id",
        "external_property_id",
        "property_info",
        "order_status",
        "event",
        "event_type",
        "event_datetime",
        "event_at",
        "event_time",
        "created",
        "order_datetime",
        "appointments",
        "links",
        "photos",
        "assets",
        "services",
        "order_cancelation_reason",
        "order_cancelation_notes",
        "unable_to_complete_appt",
        "unable_to_complete_appt_reason",
        "unable_to_complete_appt_notes",
    }
)
_ENVELOPE_KEYS = frozenset({"event", "event_type", "event_datetime", "event_at", "event_time"})
_EVENT_KEYS = ("event", "event_type")
_EVENT_TIME_KEYS = ("event_datetime", "event_at", "event_time")


@dataclass(frozen=True)
class Photo:
    sequence: int | None
    caption: str | None
    full_size_url: str | None
    full_size_watermarked_url: str | None
    urls: Mapping[str, str]  # every *_url key of the photo, the two above included
    uploaded_at: datetime | None
    modified_at: datetime | None


@dataclass(frozen=True)
class Appointment:
    appointment_id: str | None
    start_at: datetime | None
    end_at: datetime | None
    duration_minutes: float | None
    planotech_name: str | None
    cancelation_reason: str | None
    cancelation_notes: str | None


@dataclass(frozen=True)
class VendorNews:
    """One piece of news about one order, whichever shape it came in."""

    vendor_order_id: str | None
    vendor_request_id: str | None
    legacy_order_id: str | None
    external_order_id: str | None
    external_property_id: str | None
    event: str | None  # e.g. "order.delivered"; unknown events are kept as sent (lower case)
    event_at: datetime | None  # aware (UTC); None when the body has no usable event time
    order_status: str | None  # as reported (normalised), None when absent
    status: str | None  # order_status, else the status the event implies (vendor_status)
    status_rank: int | None  # lifecycle rank of `status`; None when it has none
    created_at: datetime | None
    appointments: tuple[Appointment, ...]
    links: Mapping[str, str]  # photo_manage_link, zillow_3d_link, tour_link, ...
    photos: tuple[Photo, ...]
    price_cents: int | None  # sum of the services' reported prices, when every service has one
    unable_to_complete: bool | None
    unable_to_complete_reason: str | None
    unable_to_complete_notes: str | None
    cancelation_reason: str | None
    cancelation_notes: str | None
    extra: Mapping[str, Any]  # keys this parser does not know, as sent
    problems: tuple[str, ...] = field(default=())  # values that were dropped, and why


@dataclass(frozen=True)
class MalformedNews:
    """Input that is not news about an order; `reason` says why, for the person who reads it."""

    reason: str


def parse_vendor_news(
    body: Any, *, with_deliverables: bool = True, shape_checked: bool = False
) -> VendorNews | MalformedNews:
    """Read a parsed webhook body or retrieve answer (module docstring); never raises.

    `with_deliverables=False` leaves appointments, links, photos and extra empty: the receiver
    needs only the ids, the event and the status, and reads the rest later from the body.
    `shape_checked=True` skips the depth and size walk when the caller has just done it.
    """
    if not isinstance(body, dict):
        return MalformedNews(f"the body is a JSON {_json_type(body)}, not an object")
    too_big = None if shape_checked else shape_problem(body)
    if too_big is not None:
        return MalformedNews(too_big)
    envelope, order = _split(body)
    reader = _Reader()
    news = reader.news(envelope, order, with_deliverables=with_deliverables)
    if not (news.vendor_order_id or news.vendor_request_id or news.external_order_id):
        return MalformedNews("it names no order (order_id, request_id or external_order_id)")
    return news


def _split(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(envelope, order): the keys about the delivery, and the order object."""
    data = body.get("data")
    if isinstance(data, dict) and "order_id" not in body:
        # A retrieve answer: {"code": 200, "status": "action-successful", "data": {...}}.
        return {}, data
    nested = body.get("order")
    if isinstance(nested, dict):
        envelope = {key: value for key, value in body.items() if key != "order"}
        return envelope, nested
    return {}, body


class _Reader:
    """Reads fields tolerantly and collects what it had to drop."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def news(
        self, envelope: dict[str, Any], order: dict[str, Any], *, with_deliverables: bool
    ) -> VendorNews:
        event = self._first_text(envelope, order, _EVENT_KEYS, limit=100)
        event = event.lower() if event else None
        event_at = self._first_time(envelope, order, _EVENT_TIME_KEYS)
        order_status = normalise_status(self.text(order, "order_status", limit=MAX_ID))
        status = effective_status(order_status, event)
        photos_source = order.get("photos")
        assets = order.get("assets")
        if photos_source is None and isinstance(assets, dict):
            photos_source = assets.get("photos")
        property_info = order.get("property_info")
        v2_property_id = (
            self.identifier(property_info, "property_id", limit=255)
            if isinstance(property_info, dict)
            else None
        )
        extra: dict[str, Any] = {}
        if with_deliverables:
            extra = {key: value for key, value in order.items() if key not in _ORDER_KEYS}
            for key, value in envelope.items():
                if key not in _ENVELOPE_KEYS:
                    extra[f"envelope.{key}"] = value
        else:
            photos_source = None
        return VendorNews(
            vendor_order_id=self.identifier(order, "order_id"),
            vendor_request_id=self.identifier(order, "request_id"),
            legacy_order_id=self.identifier(order, "legacy_order_id"),
            external_order_id=(
                self.identifier(order, "external_order_id", limit=255)
                or self.identifier(order, "external_id", limit=255)
            ),
            external_property_id=(
                self.identifier(order, "external_property_id", limit=255) or v2_property_id
            ),
            event=event,
            event_at=event_at,
            order_status=order_status,
            status=status,
            status_rank=status_rank(status),
            created_at=self.time(order, "created") or self.time(order, "order_datetime"),
            appointments=self.appointments(
                order.get("appointments") if with_deliverables else None
            ),
            links=MappingProxyType(self.links(order.get("links") if with_deliverables else None)),
            photos=self.photos(photos_source),
            price_cents=self.price(order.get("services")),
            unable_to_complete=self.flag(order, "unable_to_complete_appt"),
            unable_to_complete_reason=self.text(order, "unable_to_complete_appt_reason"),
            unable_to_complete_notes=self.text(order, "unable_to_complete_appt_notes"),
            cancelation_reason=self.text(order, "order_cancelation_reason"),
            cancelation_notes=self.text(order, "order_cancelation_notes"),
            extra=MappingProxyType(extra),
            problems=tuple(self.problems),
        )

    # --- scalars ------------------------------------------------------------------------------

    def identifier(self, data: dict[str, Any], key: str, *, limit: int = MAX_ID) -> str | None:
        """An id sent as an integer or a string ("654321"); anything else is dropped."""
        value = data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            text = str(value)
        elif isinstance(value, str):
            text = value.strip()
        else:
            self.problems.append(f"{key}: expected an id, got a {_json_type(value)}")
            return None
        if not text or len(text) > limit or (limit == MAX_ID and not _ID_PATTERN.match(text)):
            self.problems.append(f"{key}: not a usable id")
            return None
        return text

    def text(self, data: dict[str, Any], key: str, *, limit: int = MAX_TEXT) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.problems.append(f"{key}: expected text, got a {_json_type(value)}")
            return None
        text = str(value).strip()
        return text[:limit] if text else None

    def flag(self, data: dict[str, Any], key: str) -> bool | None:
        value = data.get(key)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.problems.append(f"{key}: expected true or false")
        return None

    def time(self, data: dict[str, Any], key: str) -> datetime | None:
        value = data.get(key)
        if value is None or value == "":
            return None
        parsed = _parse_time(value)
        if parsed is None:
            self.problems.append(f"{key}: not a date and time")
        return parsed

    def _first_text(
        self, envelope: dict[str, Any], order: dict[str, Any], keys: tuple[str, ...], limit: int
    ) -> str | None:
        for source in (envelope, order):
            for key in keys:
                found = self.text(source, key, limit=limit)
                if found:
                    return found
        return None

    def _first_time(
        self, envelope: dict[str, Any], order: dict[str, Any], keys: tuple[str, ...]
    ) -> datetime | None:
        for source in (envelope, order):
            for key in keys:
                found = self.time(source, key)
                if found is not None:
                    return found
        return None

    # --- structures ---------------------------------------------------------------------------

    def links(self, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"links: expected an object, got a {_json_type(value)}")
            return {}
        links = {}
        for name, url in value.items():
            if isinstance(url, str) and url.strip() and len(url) <= MAX_URL:
                links[str(name)[:100]] = url.strip()
            elif url not in (None, ""):
                self.problems.append(f"links.{name}: not a URL")
        return links

    def photos(self, value: Any) -> tuple[Photo, ...]:
        items = self._list(value, "photos", MAX_PHOTOS)
        photos = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                self.problems.append(f"photos[{index}]: expected an object")
                continue
            urls = {
                str(key): url.strip()
                for key, url in item.items()
                if str(key).endswith("_url") and isinstance(url, str) and 0 < len(url) <= MAX_URL
            }
            photos.append(
                Photo(
                    sequence=self._integer(item.get("sequence")),
                    caption=self.text(item, "caption"),
                    full_size_url=urls.get("full_size_url"),
                    full_size_watermarked_url=urls.get("full_size_watermarked_url"),
                    urls=MappingProxyType(urls),
                    uploaded_at=self.time(item, "uploaded_at"),
                    modified_at=self.time(item, "modified_at"),
                )
            )
        return tuple(photos)

    def appointments(self, value: Any) -> tuple[Appointment, ...]:
        items = self._list(value, "appointments", MAX_APPOINTMENTS)
        appointments = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                self.problems.append(f"appointments[{index}]: expected an object")
                continue
            minutes = _number(item.get("duration_m"))
            if minutes is None:
                hours = _number(item.get("duration"))  # V2: hours, e.g. 0.5
                minutes = hours * 60 if hours is not None else None
            appointments.append(
                Appointment(
                    appointment_id=self.identifier(item, "appointment_id"),
                    start_at=self.time(item, "start_datetime"),
                    end_at=self.time(item, "end_datetime"),
                    duration_minutes=minutes,
                    planotech_name=self.text(item, "planotech_name"),
                    cancelation_reason=(
                        self.text(item, "cancelation_reason")
                        or self.text(item, "cancellation_reason")
                    ),
                    cancelation_notes=(
                        self.text(item, "cancelation_notes")
                        or self.text(item, "cancellation_reason_detail")
                    ),
                )
            )
        return tuple(appointments)

    def price(self, services: Any) -> int | None:
        """The order's price in cents: the sum of its services' `price`, if each has one."""
        if not isinstance(services, list) or not services:
            return None
        total = 0
        for service in services:
            price = service.get("price") if isinstance(service, dict) else None
            cents = self._integer(price)
            if cents is None or cents < 0:
                return None
            total += cents
        return total

    def _list(self, value: Any, name: str, limit: int) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.append(f"{name}: expected a list, got a {_json_type(value)}")
            return []
        if len(value) > limit:
            self.problems.append(f"{name}: {len(value)} entries, only the first {limit} kept")
        return value[:limit]

    @staticmethod
    def _integer(value: Any) -> int | None:
        number = _number(value)
        if number is None or number != int(number):
            return None
        return int(number)


def _number(value: Any) -> float | None:
    """An int, a float or a numeric string ("2.5", as V2 sends numbers); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value) if abs(value) < 2**53 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= 32:
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _parse_time(value: Any) -> datetime | None:
    """ISO 8601 (`2021-05-18T18:03:30.000Z`, `...+00:00`) or epoch seconds, as aware UTC.

    A time without an offset is read as UTC, the zone of every example the vendor publishes.
    """
    parsed: datetime
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or not _EPOCH_RANGE[0] <= value <= _EPOCH_RANGE[1]:
            return None
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str) or not 10 <= len(value.strip()) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def shape_problem(body: Any) -> str | None:
    """Why a parsed body is too deep or too big to read, or None.

    Iterative, so it is safe on any depth; callers run it before anything recursive.
    """
    stack: list[tuple[Any, int]] = [(body, 1)]
    values = 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            return f"it holds more than {MAX_VALUES} values"
        if depth > MAX_DEPTH:
            return f"it is nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
