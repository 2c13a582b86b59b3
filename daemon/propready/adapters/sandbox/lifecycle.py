"""An order's life at the vendor, as the sandbox plays it: statuses, events and deliverables.

Each status step fills in what the real vendor would show by then, in the shape of the seed's
retrieve example: an appointment once scheduled, and links (`photo_manage_link`,
`zillow_3d_link`) and photos (sequence, caption, URLs, upload and modification times) once
delivered. The step's webhook event follows planomatic-api.md 2.2; `on_site` has no documented
event, so it sends none. URLs point at `.example` hosts: they have the vendor's shape and are
never fetched.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# One step along the likely happy path (planomatic-api.md 2.1); a rescheduled order goes back
# to `scheduled` with a new appointment.
HAPPY_PATH = {
    "new_request": "ordered",
    "ordered": "scheduling",
    "scheduling": "scheduled",
    "pending_reschedule": "scheduled",
    "scheduled": "on_site",
    "on_site": "post_processing",
    "post_processing": "completed",
}
DELIVERED = "completed"
# The webhook event each status sends (planomatic-api.md 2.2; `received` and
# `awaiting_scheduling` are the inferred public names of internal event types).
STATUS_EVENTS = {
    "new_request": "order.received",
    "ordered": "order.processed",
    "scheduling": "appointment.awaiting_scheduling",
    "pending_appointment": "appointment.awaiting_availability",
    "scheduled": "appointment.scheduled",
    "committed": "appointment.scheduled",
    "pending_reschedule": "appointment.awaiting_reschedule",
    "post_processing": "order.post_processing",
    "assembly": "order.post_processing",
    "notified": "order.delivered",
    "completed": "order.delivered",
    "canceled": "order.canceled",
    "cancelled": "order.canceled",
}
# `to` names of /_sandbox/advance that are steps rather than plain statuses.
UNABLE_TO_COMPLETE = "unable_to_complete"
STEP_ALIASES = {"delivered": DELIVERED, "cancel": "canceled"}
CAPTIONS = (
    "Front View", "Kitchen", "Living Room", "Primary Bedroom", "Bathroom", "Dining Room",
    "Bedroom", "Back Yard", "Laundry", "Garage",
)  # fmt: skip
PHOTO_HOST = "https://g2-tour-files.cdn.planomatic.example"
MANAGE_HOST = "https://go.planomatic.example/planox/manage_photos"
ZILLOW_HOST = "https://www.zillow.example/view-3d-home"
APPOINTMENT_MINUTES = 30


def new_order_fields() -> dict[str, Any]:
    """What a just-created order carries besides the request's echo and its ids."""
    return {
        "appointments": [],
        "order_cancelation_reason": None,
        "order_cancelation_notes": None,
        "unable_to_complete_appt": False,
        "unable_to_complete_appt_reason": None,
        "unable_to_complete_appt_notes": None,
        "links": {},
        "photos": [],
    }


def timestamp(moment: datetime) -> str:
    """The vendor's datetime format: `2021-05-20T18:00:00.000+00:00`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def apply_status(
    order: dict[str, Any], status: str, now: datetime, *, reason: str | None = None
) -> str | None:
    """Move `order` (in place) to `status` or the step named so; return the event it sends."""
    status = STEP_ALIASES.get(status, status)
    if status == UNABLE_TO_COMPLETE:
        return _unable_to_complete(order, now, reason)
    order["order_status"] = status
    if status in ("scheduled", "committed"):
        _book_appointment(order, now)
        order["unable_to_complete_appt"] = False
    elif status == DELIVERED or status == "notified":
        if not order.get("appointments"):
            _book_appointment(order, now)
        _deliver(order, now)
    elif status in ("canceled", "cancelled") and order.get("order_cancelation_reason") is None:
        order["order_cancelation_reason"] = reason or "outside_service_area"
        order["order_cancelation_notes"] = "Canceled by PlanOmatic (sandbox)"
    event = STATUS_EVENTS.get(status)
    if event is not None:
        order["event"] = event
    return event


def _unable_to_complete(order: dict[str, Any], now: datetime, reason: str | None) -> str:
    order["order_status"] = "pending_reschedule"
    order["unable_to_complete_appt"] = True
    order["unable_to_complete_appt_reason"] = reason or "property_not_ready"
    order["unable_to_complete_appt_notes"] = "The PlanOtech could not get in (sandbox)"
    appointments = order.get("appointments") or []
    if appointments:
        appointments[-1]["cancelation_reason"] = "unable_to_complete"
    order["event"] = "appointment.unable_to_complete"
    return "appointment.unable_to_complete"


def _book_appointment(order: dict[str, Any], now: datetime) -> None:
    appointments = order.setdefault("appointments", [])
    start = (now + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    number = len(appointments) + 1
    appointments.append(
        {
            "appointment_id": f"{order['order_id']}{number:02d}",
            "start_datetime": timestamp(start),
            "end_datetime": timestamp(start + timedelta(minutes=APPOINTMENT_MINUTES)),
            "duration_m": APPOINTMENT_MINUTES,
            "planotech_name": "Bobby",
            "cancelation_reason": None,
            "cancelation_notes": None,
        }
    )


def _deliver(order: dict[str, Any], now: datetime) -> None:
    order_id = order["order_id"]
    slugs = {
        str(service.get("slug")): service.get("quantity")
        for service in order.get("services") or []
        if isinstance(service, dict)
    }
    photo_count = sum(
        quantity
        for slug, quantity in slugs.items()
        if "photo" in slug and isinstance(quantity, int) and not isinstance(quantity, bool)
    )
    links: dict[str, str] = {}
    if "zillow_3d_and_floor_plans" in slugs:
        links["zillow_3d_link"] = f"{ZILLOW_HOST}/{order_id}"
    if photo_count:
        links["photo_manage_link"] = f"{MANAGE_HOST}/{order_id}"
    order["links"] = links
    uploaded = timestamp(now - timedelta(hours=2))
    order["photos"] = [
        {
            "sequence": sequence,
            "caption": CAPTIONS[(sequence - 1) % len(CAPTIONS)],
            "full_size_url": f"{PHOTO_HOST}/{order_id}-{sequence}.jpg",
            "full_size_watermarked_url": f"{PHOTO_HOST}/{order_id}-{sequence}/cw.jpg",
            "uploaded_at": uploaded,
            "modified_at": timestamp(now),
        }
        for sequence in range(1, min(photo_count, 100) + 1)
    ]


def webhook_body(
    order: dict[str, Any], event: str, event_at: datetime, shape: str
) -> dict[str, Any]:
    """The delivery body: the flat retrieve shape with the event, or the nested shape with
    `assets` (planomatic-api.md 7 #13)."""
    when = timestamp(event_at)
    if shape == "flat":
        return {**order, "event": event, "event_datetime": when}
    inner = {key: value for key, value in order.items() if key not in ("photos", "event")}
    floor_plans = (
        [{"url": f"{ZILLOW_HOST}/{order['order_id']}/floor-plan.pdf"}]
        if "zillow_3d_link" in (order.get("links") or {})
        else []
    )
    inner["assets"] = {"photos": order.get("photos") or [], "floor_plans": floor_plans}
    return {"event": event, "event_datetime": when, "order": inner}
