"""The sandbox's fault injection over a real socket, seen through propready's PlanOmatic client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from propready.adapters.planomatic import (
    PlanomaticClient,
    VendorAmbiguous,
    VendorRateLimited,
)
from propready.adapters.sandbox import SandboxConfig, SandboxServer
from propready.adapters.sandbox.faults import parse_fault_spec
from propready.cli.sandbox_command import sandbox_command
from tests.integration.test_sandbox import order_body

KEY = "key-a"


def _config(**overrides: Any) -> SandboxConfig:
    base = SandboxConfig.default()
    keys = {KEY: frozenset({"investment_entity_1", "investment_entity_2"})}
    return SandboxConfig(api_keys=keys, catalog=base.catalog, **overrides)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(_config(stall_seconds=5)) as server:
        yield server


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[PlanomaticClient]:
    with PlanomaticClient(sandbox.url, KEY, timeout_seconds=0.5) as planomatic:
        yield planomatic


def _order() -> dict[str, Any]:
    body = order_body()
    body.pop("api_key", None)
    return body


@pytest.mark.parametrize(
    ("fault", "error", "saved"),
    [
        ("429", VendorRateLimited, 0),
        ("500", VendorAmbiguous, 0),
        ("502_html", VendorAmbiguous, 0),
        ("500_after_save", VendorAmbiguous, 1),
        ("drop", VendorAmbiguous, 1),
        ("stall", VendorAmbiguous, 1),
    ],
)
def test_each_fault_reaches_the_client_as_its_kind_of_error(
    sandbox: SandboxServer,
    client: PlanomaticClient,
    fault: str,
    error: type[Exception],
    saved: int,
) -> None:
    """A queued fault hits the next create only; the ledger shows whether it saved the order."""
    sandbox.inject("create", fault)
    with pytest.raises(error):
        client.create_order(_order())
    assert len(sandbox.orders) == saved
    assert sandbox.pending_faults() == {}
    placed = client.create_order({**_order(), "external_property_id": "unit-2"})
    assert placed.order_status == "new_request"


def test_a_stalled_answer_is_a_read_timeout_not_a_refusal(
    sandbox: SandboxServer, client: PlanomaticClient
) -> None:
    """Save-then-stall looks like a timeout after sending: ambiguous, and quick (no 5 s wait)."""
    sandbox.inject("create", "stall")
    started = time.monotonic()
    with pytest.raises(VendorAmbiguous, match="no answer in time"):
        client.create_order(_order())
    assert time.monotonic() - started < 3


def test_faults_queue_in_order_per_action(sandbox: SandboxServer, client: PlanomaticClient) -> None:
    """Faults for one action do not touch another's, and apply in the order given."""
    sandbox.inject("create", "429", "500")
    sandbox.inject("retrieve", "429")
    with pytest.raises(VendorRateLimited):
        client.create_order(_order())
    with pytest.raises(VendorRateLimited):
        client.retrieve_order("100001")
    with pytest.raises(VendorAmbiguous):
        client.create_order(_order())
    assert client.create_order(_order()).order_id == "100001"


def test_latency_is_added_to_every_answer() -> None:
    """With latency configured, each answer takes at least that long."""
    with (
        SandboxServer(_config(latency_seconds=0.2)) as server,
        PlanomaticClient(server.url, KEY) as planomatic,
    ):
        started = time.monotonic()
        planomatic.create_order(_order())
        assert time.monotonic() - started >= 0.2


def test_the_rate_window_is_configurable() -> None:
    """A 2-per-0.3 s limit refuses the third request and admits it after the window."""
    with (
        SandboxServer(_config(rate_limit=2, rate_window_seconds=0.3)) as server,
        PlanomaticClient(server.url, KEY) as planomatic,
    ):
        planomatic.create_order(_order())
        planomatic.create_order({**_order(), "external_property_id": "unit-2"})
        with pytest.raises(VendorRateLimited):
            planomatic.create_order({**_order(), "external_property_id": "unit-3"})
        time.sleep(0.35)
        planomatic.create_order({**_order(), "external_property_id": "unit-3"})
        assert len(server.orders) == 3


def test_status_progresses_on_demand_through_the_control_route(
    sandbox: SandboxServer, client: PlanomaticClient
) -> None:
    """POST /_sandbox/advance steps an order along the usual path, or to a named status."""
    order_id = client.create_order(_order()).order_id
    assert order_id is not None
    with httpx.Client(base_url=sandbox.url) as http:
        stepped = http.post("/_sandbox/advance", json={"order_id": int(order_id)})
        assert stepped.json()["data"]["order_status"] == "ordered"
        named = http.post("/_sandbox/advance", json={"order_id": int(order_id), "status": "hold"})
        assert named.json()["data"]["order_status"] == "hold"
        bad = http.post("/_sandbox/advance", json={"order_id": int(order_id), "status": "nope"})
        assert bad.status_code == 400
    assert client.retrieve_order(order_id).order_status == "hold"


def test_faults_can_be_queued_from_the_command_line_options() -> None:
    """`--fault create=429,drop` parses; a bad spec is refused with a usage error naming it."""
    assert parse_fault_spec("create=429,drop") == ("create", ["429", "drop"])
    with pytest.raises(ValueError, match="fault kinds"):
        parse_fault_spec("create=boom")
    result = CliRunner().invoke(sandbox_command, ["--fault", "create=boom", "--port", "0"])
    assert result.exit_code == 2
    assert "create=boom" in result.output
