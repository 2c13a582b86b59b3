"""The console in a real browser: log in, approve, see PlanOmatic (the sandbox) receive the order;
what a viewer sees and may do; forged forms refused; a home's delivered photos; a screenshot of
every page, checked not to be blank."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from propready.adapters.sandbox import SandboxServer
from propready.adapters.store import outbox
from propready.service import run_cycle
from tests.integration.console_support import (
    PASSWORDS,
    Served,
    add_users,
    console_settings,
    orders_awaiting_approval,
    serve_console,
)
from tests.integration.cycle_support import SECRET_CODE, Clock, PmDatabase, wired

# Draws the screenshot on a canvas and counts its colours (no image library needed).
COUNT_COLOURS = """async (data) => {
  const image = new Image();
  image.src = "data:image/png;base64," + data;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width; canvas.height = image.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const pixels = context.getImageData(0, 0, image.width, image.height).data;
  const counts = new Map();
  for (let i = 0; i < pixels.length; i += 4) {
    const key = (pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2];
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return {colours: counts.size, top: Math.max(...counts.values()), pixels: pixels.length / 4};
}"""


@dataclass(frozen=True)
class Photo:
    kind: str
    name: str
    url: str
    sequence: int | None
    caption: str | None


PHOTOS = [
    Photo("photo", "front.jpg", "https://cdn.example.com/DEN/1.jpg", 1, "Front of the house"),
    Photo("photo", "kitchen.jpg", "https://cdn.example.com/DEN/2.jpg", 2, "Kitchen"),
    Photo("link", "zillow_3d_link", "https://www.zillow.com/view-3d-home/abc", None, None),
]


@pytest.fixture
def sqlite_state(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "state.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def scene(
    sqlite_state: str, pm: PmDatabase, sandbox: SandboxServer
) -> Iterator[tuple[Served, dict[str, str], Clock]]:
    clock = Clock()
    settings = console_settings(sqlite_state, pm, sandbox)
    ids = orders_awaiting_approval(settings, pm, clock)
    with serve_console(settings, now=clock, deliverables=lambda c, o: PHOTOS) as served:
        add_users(served.state, clock)
        yield served, ids, clock


def log_in(browser: Browser, served: Served, name: str) -> Page:
    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    page.goto(served.url + "/")
    assert page.url.startswith(served.url + "/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_url(served.url + "/")
    assert f"{name} (" in page.inner_text("header")
    return page


def csrf(page: Page) -> str:
    value = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert value
    return value


def not_blank(browser: Browser, shot: Path) -> None:
    data = base64.b64encode(shot.read_bytes()).decode()
    checker = browser.new_page()  # about:blank, without the console's CSP
    try:
        stats = checker.evaluate(COUNT_COLOURS, data)
    finally:
        checker.close()
    assert stats["colours"] > 8, (shot.name, stats)
    assert stats["top"] < 0.99 * stats["pixels"], (shot.name, stats)


def test_an_approver_approves_in_the_browser_and_the_vendor_receives_the_order(
    browser: Browser,
    scene: tuple[Served, dict[str, str], Clock],
    pm: PmDatabase,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    served, ids, clock = scene
    page = log_in(browser, served, "alice")
    order = ids["H1"]
    assert "waits for approval" in page.inner_text("main")
    page.click(f"main a[href='/orders/{order}']")
    page.wait_for_url(f"{served.url}/orders/{order}")
    page.click("button:has-text('Approve')")
    page.wait_for_url(f"{served.url}/orders/{order}?*")
    assert "Approved" in page.inner_text("main")
    with served.state.connect() as connection:
        approved = outbox.find_by_external_order_id(connection, order)
    assert approved is not None
    assert approved.state.value == "planned"

    settings = served.console.deps.settings
    with wired(settings) as parts:  # the next send cycle, as `propready run` does it
        run_cycle(parts, clock)
    received = [o.get("external_order_id") for o in sandbox.orders]
    assert order in received
    assert ids["H2"] not in received  # not approved: still waiting

    # Placed now: the spend page shows it in its table and charts.
    page.goto(f"{served.url}/spend")
    assert "investment_entity_1" in page.inner_text("table")
    assert page.locator("figure.chart svg rect.bar").count() >= 2
    shot = tmp_path / "console-spend-placed.png"
    page.screenshot(path=str(shot), full_page=True)
    not_blank(browser, shot)

    # A form posted without the CSRF token is refused, and nothing changes.
    refused = page.request.post(f"{served.url}/orders/{ids['H2']}/approve", form={})
    assert refused.status == 403
    with served.state.connect() as connection:
        waiting = outbox.find_by_external_order_id(connection, ids["H2"])
    assert waiting is not None
    assert waiting.state.value == "awaiting_approval"
    page.context.close()


def test_a_viewer_has_no_approve_button_and_a_forged_post_is_refused(
    browser: Browser, scene: tuple[Served, dict[str, str], Clock]
) -> None:
    served, ids, _clock = scene
    page = log_in(browser, served, "vera")
    page.goto(f"{served.url}/orders/{ids['H1']}")
    assert "awaiting_approval" in page.inner_text("main")
    assert page.locator("button:has-text('Approve')").count() == 0
    assert page.locator("form[action$='/approve']").count() == 0
    forged = page.request.post(
        f"{served.url}/orders/{ids['H1']}/approve", form={"csrf_token": csrf(page)}
    )
    assert forged.status == 403
    with served.state.connect() as connection:
        order = outbox.find_by_external_order_id(connection, ids["H1"])
    assert order is not None
    assert order.state.value == "awaiting_approval"
    page.context.close()


def test_every_page_shows_something_and_a_home_shows_its_photo_links(
    browser: Browser, scene: tuple[Served, dict[str, str], Clock], tmp_path: Path
) -> None:
    served, ids, _clock = scene
    page = log_in(browser, served, "adam")
    page.goto(f"{served.url}/homes/H1")
    links = [page.locator(f"a[href='{p.url}']").count() for p in PHOTOS]
    assert all(count >= 1 for count in links), links
    assert page.locator("img[src='https://cdn.example.com/DEN/1.jpg']").count() == 1
    assert "Front of the house" in page.inner_text("main")
    pages = {
        "attention": "/",
        "orders": "/orders",
        "order": f"/orders/{ids['H1']}",
        "home": "/homes/H1",
        "deliveries": "/deliveries",
        "spend": "/spend",
        "rules": "/rules",
        "audit": "/audit",
        "users": "/users",
    }
    for name, path in pages.items():
        response = page.goto(served.url + path)
        assert response is not None
        assert response.status == 200, (path, response.status)
        assert SECRET_CODE not in page.content()
        shot = tmp_path / f"console-{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        not_blank(browser, shot)
    page.context.close()
    login_page = browser.new_page()
    login_page.goto(served.url + "/login")
    shot = tmp_path / "console-login.png"
    login_page.screenshot(path=str(shot))
    not_blank(browser, shot)
    login_page.close()
