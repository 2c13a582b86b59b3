"""The PlanOmatic service catalog as data: which slugs exist and which quantities they accept.

PlanOmatic publishes no catalog endpoint and says its table changes without notice, so the catalog
is a YAML file shipped with the package that an operator can replace or extend; nothing here
hard-codes a slug.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class CatalogService:
    slug: str
    description: str = ""
    quantities: frozenset[int] = frozenset()  # empty: any positive integer
    access_required: bool = False
    required_fields: tuple[str, ...] = ()

    def accepts_quantity(self, quantity: int) -> bool:
        if quantity < 1:
            return False
        return not self.quantities or quantity in self.quantities


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


def catalog_from_mapping(data: Any, source: str = "catalog") -> Catalog:
    if not isinstance(data, Mapping) or not isinstance(data.get("services"), Mapping):
        raise CatalogError(f"{source}: expected a mapping with a 'services' mapping")
    services: dict[str, CatalogService] = {}
    for slug, spec in data["services"].items():
        if not isinstance(slug, str) or not isinstance(spec, Mapping):
            raise CatalogError(f"{source}: service {slug!r} must map a slug to a mapping")
        quantities = spec.get("quantities", [])
        if not isinstance(quantities, list) or not all(
            isinstance(q, int) and not isinstance(q, bool) and q > 0 for q in quantities
        ):
            raise CatalogError(f"{source}: services.{slug}.quantities must be positive integers")
        required = spec.get("required_fields", [])
        services[slug] = CatalogService(
            slug=slug,
            description=str(spec.get("description", "")),
            quantities=frozenset(quantities),
            access_required=bool(spec.get("access_required", False)),
            required_fields=tuple(str(f) for f in required),
        )
    return Catalog(services)
