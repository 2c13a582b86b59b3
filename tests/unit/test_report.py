"""The audit report page and its charts, checked by parsing the HTML and the SVG."""

from __future__ import annotations

from datetime import UTC, date, datetime
from html.parser import HTMLParser

from propready.report.page import (
    HomeLine,
    ReportData,
    latency_histogram,
    render,
    spend_lines,
    week_of,
)
from propready.report.story import summarise, trace_lines
from propready.report.svg import bar_chart

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Outline(HTMLParser):
    """Tags, external references and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []
        self.bar_titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            remote = (value or "").startswith(("http://", "https://")) and name != "xmlns"
            if name in ("src", "href") or remote:
                self.external.append(f"{tag} {name}={value}")
        self._in_title = tag == "title" and "rect" in self.tags[-3:-1]

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.bar_titles.append(data)


def _data() -> ReportData:
    homes = [
        HomeLine(
            datetime(2026, 11, 3, 9, tzinfo=UTC),
            "H1",
            "entity_a",
            "pr-1",
            "2026-11",
            25000,
            "estimate",
        ),
        HomeLine(
            datetime(2026, 11, 4, 9, tzinfo=UTC),
            "H2",
            "entity_b",
            "pr-2",
            "2026-11",
            9900,
            "vendor",
        ),
    ]
    return ReportData(
        since=datetime(2026, 11, 1, tzinfo=UTC),
        until=NOW,
        orders_placed=6,
        spend_cents=34900,
        weekly_orders={
            "2026-W45": {"entity_a": 3, "entity_b": 1},
            "2026-W46": {"entity_a": 2},
        },
        spend_by_entity_month=spend_lines(homes),
        homes=homes,
        outcomes={"order_created": 6, "duplicate_blocked": 2, "no_rule_matched": 1},
        latencies=[30.0, 200.0, 200.0, 7200.0],
        rejections=[("postal_code: invalid", 2), ("bedrooms: required", 1)],
        unknown_now=1,
    )


def test_report_is_one_self_contained_page_with_four_charts() -> None:
    """Four inline SVG charts, figures, no script and no external reference."""
    page = Outline()
    page.feed(render(_data(), NOW))
    assert page.tags.count("svg") == 4
    assert "script" not in page.tags
    assert page.external == []
    text = " ".join(page.text)
    assert "Orders placed per week" in text
    assert "Top rejection reasons" in text
    assert "0:03:20" in text  # the median of 30, 200, 200, 7200 seconds


def test_headline_spend_table_and_home_list() -> None:
    """The headline counts orders and spend; spend per entity and month; one row per home."""
    page = Outline()
    page.feed(render(_data(), NOW))
    text = "|".join(t for t in page.text if t.strip())
    assert "Orders placed|6|Spend|$349.00 (est.)|" in text
    assert "entity_a|2026-11|1|$250.00 (est.)|entity_b|2026-11|1|$99.00|" in text
    assert "2026-11-03 09:00|H1|entity_a|pr-1|$250.00|estimate|" in text
    assert "2026-11-04 09:00|H2|entity_b|pr-2|$99.00|vendor" in text


def test_bars_carry_their_values() -> None:
    """Each bar has a tooltip naming its category, series and value."""
    page = Outline()
    page.feed(render(_data(), NOW))
    assert "2026-W45 · entity_a: 3" in page.bar_titles
    assert "2026-W45 · entity_b: 1" in page.bar_titles
    assert "duplicate_blocked · decisions: 2" in page.bar_titles
    assert "postal_code: invalid · rejections: 2" in page.bar_titles


def test_an_empty_period_renders_and_says_so() -> None:
    """No data still makes a valid page whose charts say there is nothing to show."""
    empty = ReportData(since=NOW, until=NOW)
    html = render(empty, NOW)
    assert html.count("no data in this period") == 3  # the latency buckets always exist
    assert html.count("<svg") == 4
    assert html.count("No orders placed in this period.") == 2


def test_latency_buckets_and_weeks() -> None:
    """Latencies fall into their bucket; days map to ISO weeks."""
    histogram = latency_histogram([0.0, 59.9, 60.0, 3600.0, 90000.0])
    assert histogram["< 1 min"] == 2
    assert histogram["1-5 min"] == 1
    assert histogram["1-4 h"] == 1
    assert histogram["> 1 day"] == 1
    assert week_of(date(2026, 1, 1)) == "2026-W01"
    assert week_of(date(2026, 12, 31)) == "2026-W53"


def test_chart_text_is_escaped() -> None:
    """A category with markup is shown as text, not interpreted."""
    svg = bar_chart("t", ["<b>x</b>"], {"n": [1]})
    assert "<b>" not in svg
    assert "&lt;b&gt;x&lt;/b&gt;" in svg


def test_story_lines_for_known_and_new_kinds() -> None:
    """Known kinds read as sentences; an unknown kind shows its detail; traces show values."""
    matched = {
        "kind": "rule_matched",
        "rule_id": "sfr",
        "detail": {
            "reason": "first match",
            "services": [{"slug": "photos", "quantity": 25}],
            "trace": [
                {"rule_id": "sfr", "condition": "x >= 3", "result": True, "values": {"x": 4}}
            ],
        },
    }
    assert summarise(matched) == (
        'rule sfr matched: photos x25; first match; sfr: x >= 3 -> True (values={"x": 4})'
    )
    assert summarise({"kind": "order_status_changed", "detail": {"to": "completed"}}) == (
        "to=completed"
    )
    assert trace_lines("not a list") == []
