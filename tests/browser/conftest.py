"""A real browser for the console's tests: Debian's chromium driven by Playwright.

No browser is downloaded: Playwright launches /usr/bin/chromium (`apt-get install chromium`,
which .ci/run does when it is missing). Outside CI the tests skip when chromium is absent; with
CI=true they fail instead, so CI cannot go green without running them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

# The same PM database and sandbox fixtures as the integration tests (one definition).
from tests.integration.conftest import pm, sandbox  # noqa: F401

CHROMIUM = os.environ.get("PROPREADY_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        message = f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()
