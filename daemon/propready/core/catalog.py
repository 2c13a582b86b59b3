"""The PlanOmatic service catalog as data: which slugs exist, which quantities they accept, and
what they cost.

PlanOmatic publishes no catalog endpoint and says its table changes without notice, so the catalog
is a YAML file shipped with the package that an operator can replace or extend; nothing here
hard-codes a slug. PlanOmatic publishes no prices either (planomatic-api.md 5 and 7 #20): the
bundled prices are examples marked `estimate: true`, which an operator's catalog file replaces
with the contract's figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The keys of a catalog entry that describe its price; an operator's entry that names one of them
# replaces the bundled price as a whole (see merge_catalog_data).
PRICE_KEYS = ("prices_cents", "unit_price_cents", "estimate")


@dataclass(frozen=True, slots=True)
class CatalogService:
    slug: str
    description: str = ""
    quantities: frozenset[int] = frozenset()  # empty: any positive integer
    access_required: bool = False
    required_fields: tuple[str, ...] = ()
    # Price in cents per quantity; `unit_price_cents` x quantity for a quantity not listed.
    prices_cents: Mapping[int, int] = field(default_factory=dict)
    unit_price_cents: int | None = None
    price_is_estimate: bool = False  # an example price, not the operator's contract

    def accepts_quantity(self, quantity: int) -> bool:
        if quantity < 1:
            return False
        return not self.quantities or quantity in self.quantities

    def price_cents(self, quantity: int) -> int | None:
        """What `quantity` of this service costs, in cents; None when the catalog has no price."""
        if quantity in self.prices_cents:
            return self.prices_cents[quantity]
        if self.unit_price_cents is not None:
            return self.unit_price_cents * quantity
        return None


@dataclass(frozen=True, slots=True)
class Catalog:
    services: Mapping[str, CatalogService] = field(default_factory=dict)

    def get(self, slug: str) -> CatalogService | None:
        return self.services.get(slug)

    def merged_with(self, other: Catalog) -> Catalog:
        """The operator's catalog wins slug by slug over the bundled one."""
        return Catalog({**self.services, **other.services})


class CatalogError(ValueError):
    """A catalog file is malformed."""


def merge_catalog_data(bundled: Any, extra: Any) -> dict[str, Any]:
    """The bundled catalog's data extended by an operator's, key by key within each service.

    An operator's entry overrides only the keys it names, so a file that sets just `photos`'
    `prices_cents` keeps the bundled quantities. A price named there replaces the bundled price
    as a whole, and is the operator's own (not an estimate) unless it says `estimate: true`.
    """
    merged = {slug: dict(spec) for slug, spec in _services(bundled).items()}
    for slug, spec in _services(extra).items():
        entry = merged.setdefault(slug, {})
        if any(key in spec for key in PRICE_KEYS):
            for key in PRICE_KEYS:
                entry.pop(key, None)
        entry.update(spec)
    return {"services": merged}


def _services(data: Any) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(data, Mapping) or not isinstance(data.get("services"), Mapping):
        return {}
    return {
        slug: spec
        for slug, spec in data["services"].items()
        if isinstance(slug, str) and isinstance(spec, Mapping)
    }


def _whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def catalog_from_mapping(data: Any, source: str = "catalog") -> Catalog:
    if not isinstance(data, Mapping) or not isinstance(data.get("services"), Mapping):
        raise CatalogError(f"{source}: expected a mapping with a 'services' mapping")
    services: dict[str, CatalogService] = {}
    for slug, spec in data["services"].items():
        if not isinstance(slug, str) or not isinstance(spec, Mapping):
            raise CatalogError(f"{source}: service {slug!r} must map a slug to a mapping")
        quantities = spec.get("quantities", [])
        if not isinstance(quantities, list) or not all(_whole(q, 1) for q in quantities):
            raise CatalogError(f"{source}: services.{slug}.quantities must be positive integers")
        prices = spec.get("prices_cents", {})
        if not isinstance(prices, Mapping) or not all(
            _whole(q, 1) and _whole(p, 0) for q, p in prices.items()
        ):
            raise CatalogError(
                f"{source}: services.{slug}.prices_cents must map quantities to whole cents"
            )
        unit = spec.get("unit_price_cents")
        if unit is not None and not _whole(unit, 0):
            raise CatalogError(f"{source}: services.{slug}.unit_price_cents must be whole cents")
        estimate = spec.get("estimate", False)
        if not isinstance(estimate, bool):
            raise CatalogError(f"{source}: services.{slug}.estimate must be true or false")
        required = spec.get("required_fields", [])
        services[slug] = CatalogService(
            slug=slug,
            description=str(spec.get("description", "")),
            quantities=frozenset(quantities),
            access_required=bool(spec.get("access_required", False)),
            required_fields=tuple(str(f) for f in required),
            prices_cents=dict(prices),
            unit_price_cents=unit,
            price_is_estimate=estimate,
        )
    return Catalog(services)
