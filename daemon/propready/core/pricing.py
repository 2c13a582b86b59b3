"""What an order costs (pure): the catalog's estimate when it is planned, the vendor's figure
once PlanOmatic reports one.

Every figure is in whole cents. The vendor's price, when known, replaces the estimate in every
figure (budgets, reports, views): `spend_cents` is the one rule for that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from propready.core.catalog import Catalog
from propready.core.model import ServiceLine


@dataclass(frozen=True, slots=True)
class PriceEstimate:
    """An order's estimated price from the catalog.

    `cents` sums the lines that have a price; `unpriced` names the services that have none (the
    order is then held for approval unless its rule allows unpriced orders). `estimated` is true
    when any figure is an example price (`estimate: true` in the catalog) or a line is unpriced:
    the total is then not the contract's.
    """

    cents: int
    estimated: bool
    unpriced: tuple[str, ...] = ()


def estimate_price(services: Iterable[ServiceLine], catalog: Catalog) -> PriceEstimate:
    total = 0
    estimated = False
    unpriced: list[str] = []
    for line in services:
        entry = catalog.get(line.slug)
        price = entry.price_cents(line.quantity) if entry is not None else None
        if price is None or entry is None:
            unpriced.append(line.slug)
            continue
        total += price
        estimated = estimated or entry.price_is_estimate
    return PriceEstimate(total, estimated or bool(unpriced), tuple(unpriced))


def spend_cents(estimated_price_cents: int | None, vendor_price_cents: int | None) -> int:
    """What an order counts for in budgets and reports: the vendor's price, else the estimate."""
    if vendor_price_cents is not None:
        return vendor_price_cents
    return estimated_price_cents or 0


def vendor_price_from_order(order: Mapping[str, Any]) -> int | None:
    """The price PlanOmatic reports on an order (retrieve or webhook body), in cents, if any.

    The seed's retrieve example carries `"price": 12500` on each service line (cents); the
    order's price is their sum. None when a line states no price, or one that is not whole cents
    (a partial sum would understate the order).
    """
    services = order.get("services")
    if not isinstance(services, list) or not services:
        return None
    total = 0
    for line in services:
        if not isinstance(line, Mapping) or "price" not in line:
            return None
        cents = _cents(line["price"])
        if cents is None:
            return None
        total += cents
    return total


def _cents(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    if not number.is_finite() or number != number.to_integral_value() or number < 0:
        return None
    return int(number)


def usd(cents: int) -> str:
    """Cents for people: 1234567 -> "$12,345.67"."""
    return f"${cents // 100:,}.{cents % 100:02d}"
