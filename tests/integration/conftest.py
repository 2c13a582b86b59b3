"""Fixtures most integration tests share: a small PM database and a default sandbox.

A test module that needs other homes or another sandbox configuration defines its own fixture
of the same name, which takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from propready.adapters.sandbox import SandboxConfig, SandboxServer
from tests.integration.cycle_support import PmDatabase, home


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PmDatabase]:
    """A PM database with two occupied homes, H1 and H2."""
    database = PmDatabase(f"sqlite:///{tmp_path / 'pm.db'}")
    database.insert(home("H1"), home("H2"))
    yield database
    database.close()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """The PlanOmatic look-alike with its default key and entities, on a loopback port."""
    with SandboxServer(SandboxConfig.default()) as server:
        yield server
