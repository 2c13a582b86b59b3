"""Reading vendor news: webhook bodies in every shape we accept, and retrieve answers."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propready.core.vendor_news import (
    MAX_DEPTH,
    MAX_VALUES,
    MalformedNews,
    VendorNews,
    parse_vendor_news,
)
from propready.core.vendor_status import status_rank

# The seed's retrieve example (seed/planomatic-order-api-v3.txt), as valid JSON.
SEED_RETRIEVE: dict[str, Any] = {
    "order_id": "654321",
    "external_property_id": "DEN-00042",
    "external_order_id": "pr-42-1",
    "created": "2021-05-18T18:03:30.000Z",
    "order_status": "completed",
    "event": "order.delivered",
    "billing_entity": {"slug": "investment_entity_1", "name": "Investment Entity Number 1"},
    "property": {"location": {"street": "123 Fake St", "city": "Denver", "state": "CO"}},
    "services": [
        {"slug": "photos", "quantity": 15, "name": "Photos", "price": 12500},
        {"slug": "zillow_3d_and_floor_plans", "quantity": 1, "name": "Zillow", "price": 12500},
    ],
    "property_access": {"vacant": True, "method_of_access": "lockbox_code", "access_code": "***"},
    "order_notes": "Some special instructions",
    "appointments": [
        {
            "appointment_id": "7654321",
            "start_datetime": "2021-05-20T18:00:00.000+00:00",
            "end_datetime": "2021-05-20T18:30:00.000+00:00",
            "duration_m": 30,
            "planotech_name": "Bobby",
            "cancelation_reason": None,
            "cancelation_notes": None,
        }
    ],
    "order_cancelation_reason": None,
    "order_cancelation_notes": None,
    "unable_to_complete_appt": False,
    "unable_to_complete_appt_reason": None,
    "unable_to_complete_appt_notes": None,
    "links": {
        "zillow_3d_link": "https://www.zillow.com/view-3d-home/XXXXXXXXXX",
        "photo_manage_link": "https://go.planomatic.com/planox/manage_photos/XXXXXX",
    },
    "photos": [
        {
            "sequence": seq,
            "caption": caption,
            "full_size_url": f"https://g2-tour-files.cdn.planomatic.com/XXXXX{seq}.jpg",
            "full_size_watermarked_url": f"https://g2-tour-files.cdn.planomatic.com/XXXXX{seq}/cw.jpg",
            "uploaded_at": "2022-02-25T06:41:58.000Z",
            "modified_at": "2022-03-25T21:07:56.000Z",
        }
        for seq, caption in ((1, "Front View"), (2, "Kitchen"), (3, "Bedroom"))
    ],
    "legacy_order_id": "543210",
}


def news(body: Any) -> VendorNews:
    parsed = parse_vendor_news(body)
    assert isinstance(parsed, VendorNews), parsed
    return parsed


def test_the_seed_retrieve_example_reads_whole() -> None:
    """Ids, status, event, appointments, links, photos and price of the seed's example."""
    parsed = news(SEED_RETRIEVE)
    assert (parsed.vendor_order_id, parsed.legacy_order_id) == ("654321", "543210")
    assert (parsed.external_order_id, parsed.external_property_id) == ("pr-42-1", "DEN-00042")
    assert (parsed.event, parsed.order_status, parsed.status) == (
        "order.delivered",
        "completed",
        "completed",
    )
    assert parsed.status_rank == status_rank("completed")
    assert parsed.event_at is None  # the retrieve example carries no event time
    assert parsed.created_at == datetime(2021, 5, 18, 18, 3, 30, tzinfo=UTC)
    (appointment,) = parsed.appointments
    assert appointment.appointment_id == "7654321"
    assert appointment.start_at == datetime(2021, 5, 20, 18, 0, tzinfo=UTC)
    assert (appointment.duration_minutes, appointment.planotech_name) == (30, "Bobby")
    assert parsed.links["photo_manage_link"].endswith("/manage_photos/XXXXXX")
    assert set(parsed.links) == {"zillow_3d_link", "photo_manage_link"}
    assert [(p.sequence, p.caption) for p in parsed.photos] == [
        (1, "Front View"),
        (2, "Kitchen"),
        (3, "Bedroom"),
    ]
    first = parsed.photos[0]
    assert first.full_size_url == "https://g2-tour-files.cdn.planomatic.com/XXXXX1.jpg"
    assert first.full_size_watermarked_url is not None
    assert set(first.urls) == {"full_size_url", "full_size_watermarked_url"}
    assert first.uploaded_at == datetime(2022, 2, 25, 6, 41, 58, tzinfo=UTC)
    assert first.modified_at == datetime(2022, 3, 25, 21, 7, 56, tzinfo=UTC)
    assert parsed.price_cents == 25000
    assert parsed.unable_to_complete is False
    assert parsed.problems == ()
    assert {"billing_entity", "property", "property_access", "order_notes"} <= set(parsed.extra)


def test_the_nested_shape_reads_like_the_flat_one() -> None:
    """{event, event_datetime, order: {..., assets: {photos}}} gives the same record."""
    order = copy.deepcopy(SEED_RETRIEVE)
    photos = order.pop("photos")
    del order["event"]
    order["assets"] = {"photos": photos, "floor_plans": [{"url": "https://example.test/fp.pdf"}]}
    body = {
        "event": "order.delivered",
        "event_datetime": "2022-03-25T21:08:00.000+00:00",
        "order": order,
        "subscription": "Order Status",
    }
    parsed = news(body)
    flat = news(SEED_RETRIEVE)
    assert parsed.photos == flat.photos
    assert parsed.links == flat.links
    assert parsed.event == "order.delivered"
    assert parsed.event_at == datetime(2022, 3, 25, 21, 8, tzinfo=UTC)
    assert parsed.extra["envelope.subscription"] == "Order Status"


def test_a_retrieve_answer_is_read_through_its_envelope() -> None:
    """{"code": 200, "status": "action-successful", "data": {...}}: the order inside is read."""
    parsed = news({"code": 200, "status": "action-successful", "data": SEED_RETRIEVE})
    assert parsed.vendor_order_id == "654321"
    assert parsed.status == "completed"


def test_v2_names_are_accepted_where_they_cost_nothing() -> None:
    """links.tour_link, order_datetime, external_id, property_info and hours of duration."""
    body = {
        "request_id": 900001,
        "order_id": 700001,
        "order_datetime": "2019-09-16T15:08:37.000+00:00",
        "order_status": "scheduled",
        "external_id": "ext-1",
        "property_info": {"property_id": "P-9", "price": "300000"},
        "appointments": [
            {
                "start_datetime": "2019-09-18T15:00:00.000+00:00",
                "duration": "0.5",
                "cancellation_reason": "tenant",
                "cancellation_reason_detail": "moved the date",
            }
        ],
        "links": {"tour_link": "https://tours.example/1", "matterport_3d_link": None},
    }
    parsed = news(body)
    assert (parsed.vendor_order_id, parsed.vendor_request_id) == ("700001", "900001")
    assert parsed.created_at == datetime(2019, 9, 16, 15, 8, 37, tzinfo=UTC)
    assert (parsed.external_order_id, parsed.external_property_id) == ("ext-1", "P-9")
    (appointment,) = parsed.appointments
    assert appointment.duration_minutes == 30
    assert (appointment.cancelation_reason, appointment.cancelation_notes) == (
        "tenant",
        "moved the date",
    )
    assert dict(parsed.links) == {"tour_link": "https://tours.example/1"}
    assert parsed.price_cents is None  # property_info.price is the home's price, not ours


def test_an_event_without_a_status_implies_one() -> None:
    """An appointment.scheduled delivery without order_status ranks as scheduled."""
    parsed = news({"order_id": 5, "event": "Appointment.Scheduled"})
    assert (parsed.event, parsed.order_status, parsed.status) == (
        "appointment.scheduled",
        None,
        "scheduled",
    )


def test_unknown_events_and_keys_are_kept_not_fatal() -> None:
    """A new event name and new keys pass through; the status is simply unknown."""
    parsed = news({"order_id": 5, "event": "order.teleported", "hologram": {"x": 1}})
    assert parsed.event == "order.teleported"
    assert parsed.status is None
    assert parsed.status_rank is None
    assert parsed.extra["hologram"] == {"x": 1}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-05-18T18:03:30.000Z", datetime(2021, 5, 18, 18, 3, 30, tzinfo=UTC)),
        ("2021-05-18T12:03:30-06:00", datetime(2021, 5, 18, 18, 3, 30, tzinfo=UTC)),
        ("2021-05-18T18:03:30", datetime(2021, 5, 18, 18, 3, 30, tzinfo=UTC)),
        (1621361010, datetime(2021, 5, 18, 18, 3, 30, tzinfo=UTC)),
        ("yesterday", None),
        (12, None),
        (True, None),
        ("2021-13-45T99:00:00Z", None),
    ],
)
def test_event_times(value: Any, expected: datetime | None) -> None:
    """ISO 8601 with Z or an offset, naive as UTC, plausible epoch seconds; else none."""
    parsed = news({"order_id": 1, "event_datetime": value})
    assert parsed.event_at == expected
    if expected is None:
        assert any("event_datetime" in problem for problem in parsed.problems)


def test_values_of_the_wrong_type_are_dropped_and_named() -> None:
    """A photo list that is an object, a link that is a number: dropped, each one named."""
    body = {
        "order_id": 1,
        "photos": {"sequence": 1},
        "links": {"photo_manage_link": 7, "zillow_3d_link": "https://z.example/1"},
        "appointments": ["soon"],
        "unable_to_complete_appt": "maybe",
        "order_status": ["scheduled"],
        "services": [{"slug": "photos", "price": "12500"}, {"slug": "x"}],
    }
    parsed = news(body)
    assert parsed.photos == ()
    assert parsed.appointments == ()
    assert dict(parsed.links) == {"zillow_3d_link": "https://z.example/1"}
    assert parsed.order_status is None
    assert parsed.price_cents is None  # one service has no price: the total is unknown
    assert len(parsed.problems) == 5
    assert any(problem.startswith("photos:") for problem in parsed.problems)


def test_string_numbers_and_ids_are_read_leniently() -> None:
    """`"2"` as a sequence and `"12500"` as a price, as V2 sends numbers; ids as text or int."""
    parsed = news(
        {
            "order_id": " 654321 ",
            "photos": [{"sequence": "2", "caption": "Kitchen"}],
            "services": [{"price": "12500"}],
        }
    )
    assert parsed.vendor_order_id == "654321"
    assert parsed.photos[0].sequence == 2
    assert parsed.price_cents == 12500


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "array"),
        ("order.delivered", "string"),
        (None, "null"),
        (7, "number"),
        ({"event": "order.delivered"}, "names no order"),
        ({"order_id": True, "order_status": "scheduled"}, "names no order"),
        ({"order_id": {"id": 1}}, "names no order"),
    ],
)
def test_what_is_not_news_about_an_order_is_malformed(body: Any, reason: str) -> None:
    """Not an object, or no order named: MalformedNews with a reason, never an exception."""
    parsed = parse_vendor_news(body)
    assert isinstance(parsed, MalformedNews)
    assert reason in parsed.reason


def test_an_external_order_id_alone_names_an_order() -> None:
    """An order the vendor settled as a duplicate has no id here yet: external_order_id will do."""
    parsed = news({"external_order_id": "pr-7", "event": "order.processed"})
    assert parsed.vendor_order_id is None
    assert parsed.external_order_id == "pr-7"


def test_depth_and_size_are_bounded() -> None:
    """Nesting deeper than MAX_DEPTH or more than MAX_VALUES values is malformed, not a crash."""
    deep: Any = {"order_id": 1}
    for _ in range(MAX_DEPTH + 5):
        deep = {"order_id": 1, "x": deep}
    parsed = parse_vendor_news(deep)
    assert isinstance(parsed, MalformedNews)
    assert "deeper" in parsed.reason
    wide = {"order_id": 1, "photos": [0] * (MAX_VALUES + 1)}
    parsed = parse_vendor_news(wide)
    assert isinstance(parsed, MalformedNews)
    assert "values" in parsed.reason


def test_too_many_photos_keep_the_first_ones() -> None:
    """A photo list beyond the cap is cut, and the cut is named."""
    photos = [{"sequence": n} for n in range(2_500)]
    parsed = news({"order_id": 1, "photos": photos})
    assert len(parsed.photos) == 2_000
    assert any("only the first 2000" in problem for problem in parsed.problems)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "order_id",
                    "event",
                    "order_status",
                    "photos",
                    "links",
                    "appointments",
                    "order",
                    "data",
                    "services",
                    "event_datetime",
                    "sequence",
                    "caption",
                    "price",
                    "x",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_any_json_value_parses_without_raising(body: Any) -> None:
    """Whatever JSON arrives, the parser answers VendorNews or MalformedNews."""
    parsed = parse_vendor_news(body)
    assert isinstance(parsed, VendorNews | MalformedNews)
    if isinstance(parsed, VendorNews):
        assert parsed.vendor_order_id or parsed.vendor_request_id or parsed.external_order_id
        assert parsed.event_at is None or parsed.event_at.tzinfo is not None
