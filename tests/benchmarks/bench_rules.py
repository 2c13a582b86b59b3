"""Benchmark: rule evaluations per second, CEL (as propready runs it) against plain Python.

100,000 synthetic properties and 20 rules. For each property, one EvaluationScope (one
cel.Context, built once and reused for all 20 conditions, as the daemon does) and the 20 `when`
conditions evaluated with propready's null semantics (an error is false). The baseline is the same
20 conditions as Python functions over a dict, with the same semantics (try/except), in the same
run. Also reported: evaluation without the per-property context build, and full `decide()` calls
with traces (collect policy, so every rule is evaluated).

Targets (issue 4): >= 300,000 rule evaluations/s and within 10x of plain Python.

Run:  .venv/bin/python tests/benchmarks/bench_rules.py [--properties 100000]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import parse_rule_files
from propready.core.expressions import EvaluationScope
from propready.core.rules import decide
from propready.wiring import utc_now

ZONE = ZoneInfo("America/Denver")
TYPES = ["single_family", "condo_townhouse", "duplex_townhouse", "commercial"]
MARKETS = ["Phoenix", "Denver", "Atlanta", "Dallas", "Tampa"]

# (CEL condition, the same condition in Python)
CONDITIONS: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    (
        'property.property_type == "single_family" && property.bedrooms >= 3',
        lambda p: p["property_type"] == "single_family" and p["bedrooms"] >= 3,
    ),
    ('property.property_type == "single_family"', lambda p: p["property_type"] == "single_family"),
    (
        'property.property_type in ["condo_townhouse", "duplex_townhouse"]',
        lambda p: p["property_type"] in ["condo_townhouse", "duplex_townhouse"],
    ),
    ("property.square_footage > 2500", lambda p: p["square_footage"] > 2500),
    ('property.market == "Phoenix"', lambda p: p["market"] == "Phoenix"),
    (
        'property.market != "Phoenix" && property.price >= 300000',
        lambda p: p["market"] != "Phoenix" and p["price"] >= 300000,
    ),
    (
        "property.bedrooms >= 4 && property.bathrooms >= 2",
        lambda p: p["bedrooms"] >= 4 and p["bathrooms"] >= 2,
    ),
    ("property.bedrooms <= 1", lambda p: p["bedrooms"] <= 1),
    (
        "property.price < 150000 || property.square_footage < 900",
        lambda p: p["price"] < 150000 or p["square_footage"] < 900,
    ),
    (
        'property.status == "Vacant Unrented Ready"',
        lambda p: p["status"] == "Vacant Unrented Ready",
    ),
    ("property.vacant", lambda p: p["vacant"] is True),
    (
        'property.market in ["Denver", "Dallas"] && property.bedrooms >= 2',
        lambda p: p["market"] in ["Denver", "Dallas"] and p["bedrooms"] >= 2,
    ),
    ("property.year_built < 1980", lambda p: p["year_built"] < 1980),
    (
        "property.year_built >= 2020 && property.square_footage > 1800",
        lambda p: p["year_built"] >= 2020 and p["square_footage"] > 1800,
    ),
    (
        'property.hoa_name != null && property.property_type != "single_family"',
        lambda p: p["hoa_name"] is not None and p["property_type"] != "single_family",
    ),
    ("property.pool == true", lambda p: p["pool"] is True),
    ("property.price > 500000", lambda p: p["price"] > 500000),
    ('property.property_type == "commercial"', lambda p: p["property_type"] == "commercial"),
    (
        "property.bathrooms * 2.0 > double(property.bedrooms)",
        lambda p: float(p["bathrooms"]) * 2.0 > float(p["bedrooms"]),
    ),
    (
        'property.market == "Tampa" && property.pool == true',
        lambda p: p["market"] == "Tampa" and p["pool"] is True,
    ),
]


def _rules_yaml() -> str:
    lines = [
        "hit_policy: collect",
        "triggers:",
        '  ready: property.status == "Vacant Unrented Ready"',
        "rules:",
    ]
    for index, (source, _python) in enumerate(CONDITIONS):
        lines += [
            f"  - id: rule-{index:02d}",
            "    triggered_by: [ready]",
            f"    when: '{source}'",
            f"    priority: {100 - index}",
            "    services: [{slug: photos, quantity: 25}]",
        ]
    return "\n".join(lines) + "\n"


def _property(rng: random.Random, index: int) -> dict[str, Any]:
    return {
        "external_property_id": f"P{index:06d}",
        "status": rng.choice(["Vacant Unrented Ready", "Occupied", "Notice"]),
        "property_type": rng.choice(TYPES),
        "bedrooms": rng.randint(0, 6),
        "bathrooms": Decimal(rng.choice(["1", "1.5", "2", "2.5", "3"])),
        "square_footage": rng.randint(600, 4500),
        "price": rng.randint(90_000, 900_000),
        "market": rng.choice(MARKETS),
        "vacant": rng.random() < 0.7,
        "year_built": rng.randint(1950, 2025),
        "hoa_name": rng.choice([None, "Sunrise HOA"]),
        "pool": rng.random() < 0.2,
    }


def _python_truth(function: Callable[[dict[str, Any]], bool], facts: dict[str, Any]) -> bool:
    try:
        return function(facts) is True
    except (KeyError, TypeError, ValueError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--properties", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(4)
    properties = [_property(rng, i) for i in range(args.properties)]
    ruleset = parse_rule_files([("bench.yaml", _rules_yaml())], load_catalog())
    whens = [rule.when for rule in ruleset.rules if rule.when is not None]
    functions = [python for _source, python in CONDITIONS]
    assert len(whens) == len(functions) == 20
    now = utc_now()
    evaluations = len(properties) * len(whens)
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}")
    print(f"{len(properties):,} properties x {len(whens)} rules = {evaluations:,} evaluations")

    started = time.perf_counter()
    cel_true = 0
    for facts in properties:
        scope = EvaluationScope(facts, now, ZONE)
        for when in whens:
            cel_true += scope.is_true(when)[0]
    cel_seconds = time.perf_counter() - started

    scopes = [EvaluationScope(facts, now, ZONE) for facts in properties]
    started = time.perf_counter()
    for scope in scopes:
        for when in whens:
            scope.is_true(when)
    eval_only_seconds = time.perf_counter() - started
    del scopes

    started = time.perf_counter()
    python_true = 0
    for facts in properties:
        for function in functions:
            python_true += _python_truth(function, facts)
    python_seconds = time.perf_counter() - started
    assert cel_true == python_true, (cel_true, python_true)  # same conditions, same answers

    sample = properties[: max(1, len(properties) // 10)]
    started = time.perf_counter()
    for facts in sample:
        decide(ruleset, "ready", EvaluationScope(facts, now, ZONE))
    decide_seconds = time.perf_counter() - started

    cel_rate = evaluations / cel_seconds
    python_rate = evaluations / python_seconds
    print(
        f"CEL, one context per property (as run): {cel_rate:12,.0f} evaluations/s ({cel_seconds:.2f} s)"
    )
    print(
        f"CEL, evaluation only (contexts prebuilt): {evaluations / eval_only_seconds:10,.0f} evaluations/s"
    )
    print(
        f"plain Python functions (baseline):      {python_rate:12,.0f} evaluations/s ({python_seconds:.2f} s)"
    )
    print(
        f"decide() with full traces, 20 rules:    {len(sample) / decide_seconds:12,.0f} decisions/s "
        f"({len(sample) * 20 / decide_seconds:,.0f} rule evaluations/s)"
    )
    ratio = python_rate / cel_rate
    print(f"ratio Python/CEL: {ratio:.1f}x  (target <= 10x: {'MET' if ratio <= 10 else 'MISSED'})")
    print(f"CEL rate target >= 300,000/s: {'MET' if cel_rate >= 300_000 else 'MISSED'}")
    print(f"conditions true: {cel_true:,} of {evaluations:,} (identical in CEL and Python)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
