"""Prices: the catalog's figures, an operator's catalog over them, estimates and vendor prices."""

from __future__ import annotations

from pathlib import Path

import pytest

from propready.adapters.catalog_file import load_catalog
from propready.core.catalog import CatalogError, catalog_from_mapping
from propready.core.model import ServiceLine
from propready.core.pricing import estimate_price, spend_cents, usd, vendor_price_from_order

# The services of the seed's retrieve example, as PlanOmatic reports them.
SEED_SERVICES = [
    {"slug": "photos", "quantity": 15, "name": "Photos", "price": 12500},
    {"slug": "zillow_3d_and_floor_plans", "quantity": 1, "price": 12500},
]


def test_every_bundled_service_has_an_example_price() -> None:
    """The bundled catalog prices every service, marked as estimates; the seed's two are 12500."""
    catalog = load_catalog()
    for service in catalog.services.values():
        quantity = min(service.quantities) if service.quantities else 3
        assert service.price_cents(quantity) is not None, service.slug
        assert service.price_is_estimate, service.slug
    assert catalog.services["photos"].price_cents(15) == 12500
    assert catalog.services["zillow_3d_and_floor_plans"].price_cents(1) == 12500
    assert catalog.services["community_photography"].price_cents(4) == 4 * 2500


def test_an_estimate_sums_the_lines_and_says_it_is_an_example() -> None:
    """photos x15 + the 3D tour cost 25000 cents with the example prices, marked estimated."""
    price = estimate_price(
        [ServiceLine("photos", 15), ServiceLine("zillow_3d_and_floor_plans", 1)], load_catalog()
    )
    assert (price.cents, price.estimated, price.unpriced) == (25000, True, ())


def test_an_operator_catalog_replaces_prices_key_by_key(tmp_path: Path) -> None:
    """An operator's file that only prices photos keeps their quantities; its prices are firm."""
    extra = tmp_path / "catalog.yaml"
    extra.write_text(
        "services:\n"
        "  photos:\n    prices_cents: {25: 9900}\n"
        "  twilight_photography_add_on:\n    quantities: [1]\n"
    )
    catalog = load_catalog(extra)
    photos = catalog.services["photos"]
    assert photos.quantities == frozenset({10, 15, 20, 25})
    assert (photos.price_cents(25), photos.price_cents(15), photos.price_is_estimate) == (
        9900,
        None,
        False,
    )
    price = estimate_price(
        [ServiceLine("photos", 25), ServiceLine("twilight_photography_add_on", 1)], catalog
    )
    assert (price.cents, price.estimated, price.unpriced) == (
        9900,
        True,
        ("twilight_photography_add_on",),
    )
    firm = estimate_price([ServiceLine("photos", 25)], catalog)
    assert (firm.cents, firm.estimated) == (9900, False)


@pytest.mark.parametrize(
    "spec",
    [
        {"prices_cents": {15: -1}},
        {"prices_cents": {0: 100}},
        {"prices_cents": {15: 12.5}},
        {"unit_price_cents": "25"},
        {"estimate": "yes"},
    ],
)
def test_malformed_prices_are_refused(spec: dict[str, object]) -> None:
    """Prices are whole, non-negative cents per positive quantity; estimate is a boolean."""
    with pytest.raises(CatalogError, match="photos"):
        catalog_from_mapping({"services": {"photos": spec}})


def test_the_vendor_price_is_the_sum_of_the_reported_lines() -> None:
    """The seed's retrieve example reports 12500 per line: the order cost 25000 cents."""
    assert vendor_price_from_order({"services": SEED_SERVICES}) == 25000
    assert vendor_price_from_order({"services": [{"slug": "photos", "price": "9900"}]}) == 9900
    assert vendor_price_from_order({"services": [SEED_SERVICES[0], {"slug": "x"}]}) is None
    assert vendor_price_from_order({"services": [{"price": 12.5}]}) is None
    assert vendor_price_from_order({"order_status": "completed"}) is None


def test_the_vendor_price_replaces_the_estimate() -> None:
    """Spend is the vendor's price when known, else the estimate, else nothing."""
    assert spend_cents(25000, 23000) == 23000
    assert spend_cents(25000, None) == 25000
    assert spend_cents(None, None) == 0
    assert usd(1234567) == "$12,345.67"
