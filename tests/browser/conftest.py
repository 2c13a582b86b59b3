"""A real browser for the console's tests: Debian's chromium driven by Playwright.

No browser is downloaded: Playwright launches /usr/bin/chromium (`apt-get install chromium`,
which .ci/run does when it is missing). Outside CI the tests skip when chromium is absent; with
CI=true they fail instead, so CI cannot go green without running them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from tests.integration.cycle_support import PmDatabase, home

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


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    """A PM database with two occupied homes, H1 and H2 (as in tests/integration)."""
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(home("H1"), home("H2"))
    yield database
    database.close()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig.default()) as server:
        yield server
