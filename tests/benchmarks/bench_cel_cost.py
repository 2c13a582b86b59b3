"""The most expensive CEL expressions the load-time cost rules accept, timed at the fact caps.

Run by hand (not collected by pytest):
    .venv/bin/python -m tests.benchmarks.bench_cel_cost [--runs 5]

Each generated expression fills the limits of propready.core.expression_cost (1,000 characters,
two macros, 100-element literals, no '+' or matches() inside a macro) with the costliest
operations found, and is evaluated against a synthetic property at the caps that
EvaluationScope enforces (text of 4,096 characters, lists of 100 items of equal size) built so
that nothing short-circuits. Every expression is first compiled through compile_expression, so
only accepted ones are timed; the refused ones (the 6-deep .map of wave2-anchors.md, and the
same work with the limits one step beyond) are listed with their reason. Target: every accepted
expression under 10 ms.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from propready.core.expression_cost import (
    MAX_EXPRESSION_CHARS,
    MAX_FACT_ITEMS,
    MAX_FACT_TEXT,
    MAX_LIST_LITERAL,
    MAX_MACRO_BODY_CHARS,
)
from propready.core.expressions import (
    EvaluationScope,
    ExpressionError,
    SourceLocation,
    compile_expression,
)

TARGET_MS = 10.0
WHERE = SourceLocation("bench.yaml", 1)
ITEM = "b" * (MAX_FACT_TEXT // MAX_FACT_ITEMS - 1)


def worst_property() -> dict[str, object]:
    """Facts at the caps: long text that never matches early, full lists that differ only in
    their last character (so `in` scans every item and `==` compares every item)."""
    facts: dict[str, object] = {f"t{n}": "a" * (MAX_FACT_TEXT - 1) + "z" for n in range(20)}
    facts["tags"] = [ITEM] * MAX_FACT_ITEMS
    facts["tags2"] = [ITEM[:-1] + "c"] * MAX_FACT_ITEMS
    facts["tags3"] = [ITEM] * MAX_FACT_ITEMS
    facts["n"] = 7
    return facts


def fill(prefix: str, unit: str, sep: str, suffix: str, limit: int = MAX_EXPRESSION_CHARS) -> str:
    """prefix + unit (sep unit)* + suffix, as many units as fit in `limit` characters."""
    room = limit - len(prefix) - len(suffix)
    count = max(1, (room + len(sep)) // (len(unit) + len(sep)))
    return prefix + sep.join([unit] * count) + suffix


def literal(size: int) -> str:
    return "[" + ",".join(str(n) for n in range(size)) + "]"


def body(unit: str, sep: str = " || ", chars: int = MAX_MACRO_BODY_CHARS) -> str:
    """A macro body of at most `chars` characters: x, unit sep unit ..."""
    return fill("x, ", unit, sep, "", chars)


def macro(
    receiver: str,
    unit: str,
    name: str = "map",
    sep: str = " || ",
    chars: int = MAX_MACRO_BODY_CHARS,
) -> str:
    return f"{receiver}.{name}({body(unit, sep, chars)})"


def pad(text: str) -> str:
    """Fill the rest of the length budget with cheap-but-real work outside any macro."""
    return fill(text + " || ", "property.t1.contains(property.t2)", " || ", "")


CANDIDATES: list[tuple[str, Callable[[], str]]] = [
    (
        "no macro: contains on long text",
        lambda: fill("", "property.t1.contains(property.t2)", " || ", ""),
    ),
    (
        "no macro: endsWith of a concatenation",
        lambda: fill("", "(property.t1 + property.t2).endsWith(property.t3)", " || ", ""),
    ),
    ("no macro: one long + chain", lambda: fill("size(", "property.t1", " + ", ") > 0")),
    ("no macro: matches, big regex", lambda: 'property.t1.matches("' + "(a|aa|aaa)*b" * 70 + '")'),
    ("no macro: list equality", lambda: fill("", "property.tags == property.tags3", " && ", "")),
    ("no macro: in a field", lambda: fill("", "property.t1 in property.tags", " || ", "")),
    (
        "no macro: in a 100-element literal",
        lambda: fill("", "property.n in " + literal(MAX_LIST_LITERAL), " || ", ""),
    ),
    (
        "macro over a field: contains",
        lambda: pad(macro("property.tags", "property.t1.contains(property.t2)")),
    ),
    ("macro over a field: in a list", lambda: pad(macro("property.tags", "x in property.tags2"))),
    (
        "macro over a field: list equality",
        lambda: pad(macro("property.tags", "property.tags == property.tags3", sep=" && ")),
    ),
    (
        "macro over a field: endsWith",
        lambda: pad(macro("property.tags", "property.t1.endsWith(x)", "filter")),
    ),
    (
        "macro over a 100-element literal: list equality",
        lambda: pad(
            macro(literal(MAX_LIST_LITERAL), "property.tags == property.tags3", "all", " && ")
        ),
    ),
    (
        "two macros: list equality",
        lambda: pad(
            macro(
                "property.tags",
                "property.tags == property.tags3",
                "all",
                " && ",
                MAX_MACRO_BODY_CHARS // 2,
            )
            + " || "
            + macro(
                "property.tags3",
                "property.tags == property.tags3",
                "all",
                " && ",
                MAX_MACRO_BODY_CHARS // 2,
            )
        ),
    ),
    (
        "exists_one over a field",
        lambda: pad(macro("property.tags", "property.t1.startsWith(property.t2)", "exists_one")),
    ),
    # Regular expressions at the weight budget (raw CEL strings: r"..." keeps the backslash).
    ("regex at the budget: \\w{10}", lambda: pad('property.t1.matches(r"\\w{10}")')),
    ("regex at the budget: \\d{59}", lambda: pad('property.t1.matches(r"\\d{59}")')),
    (
        "regex at the budget: (\\w|\\W|\\pL|\\b){2}, (\\w+\\s*)",
        lambda: pad(
            'property.t1.matches(r"(\\w|\\W|\\pL|\\b){2}") || property.t2.matches(r"(\\w+\\s*)")'
        ),
    ),
]

REFUSED: list[tuple[str, str]] = [
    ("6-deep .map over 10-element lists (wave2-anchors.md)", "6deep"),
    ("2-deep .map over fields", "property.tags.map(x, property.tags.map(y, x == y))"),
    ("chained .map", "property.tags.map(x, x).map(y, y == y)"),
    ("macro over a computed list", "(property.tags + property.tags2).map(x, x)"),
    ("'+' in a macro", "property.tags.map(x, x + property.t1)"),
    ("matches in a macro", 'property.tags.map(x, x.matches("a+"))'),
    ("101-element literal", literal(MAX_LIST_LITERAL + 1) + ".exists(x, x == 'a')"),
    (
        "a macro body over the budget",
        macro("property.tags", "x == property.t1", chars=MAX_MACRO_BODY_CHARS + 20),
    ),
    ("\\w{100} (25 ms to compile)", 'property.t1.matches(r"\\w{100}")'),
    ("a pattern from the data", "property.t1.matches(property.t2)"),
    (
        "1,001 characters",
        fill("", "property.t1 == 'a'", " || ", " || true", MAX_EXPRESSION_CHARS + 20),
    ),
]


def six_deep_map() -> str:
    """`.map` nested 6 deep over 10-element literals: about 8.8 s per evaluation when allowed."""
    names = "abcdef"
    text = "a+b+c+d+e+f"
    for name in reversed(names):
        text = f"[0,1,2,3,4,5,6,7,8,9].map({name}, {text})"
    return text


def evaluate_ms(source: str, runs: int) -> float:
    expression = compile_expression(source, WHERE)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    samples = []
    for _ in range(runs):
        scope = EvaluationScope(worst_property(), now, UTC)
        start = time.perf_counter()
        _value, error = scope.evaluate(expression)
        samples.append((time.perf_counter() - start) * 1000)
        if error is not None and "too large" in error:
            raise SystemExit(f"the synthetic property is over the caps: {error}")
    return max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    print(
        f"limits: {MAX_EXPRESSION_CHARS} characters, {MAX_LIST_LITERAL}-element literals; "
        f"facts: text {MAX_FACT_TEXT} characters, lists {MAX_FACT_ITEMS} items"
    )
    worst = 0.0
    for label, build in CANDIDATES:
        source = build()
        try:
            ms = evaluate_ms(source, args.runs)
        except ExpressionError as exc:
            print(f"  refused   {label}: {exc.message}")
            continue
        worst = max(worst, ms)
        print(f"  {ms:7.3f} ms (max of {args.runs})  {len(source):5} chars  {label}")
    for label, source in REFUSED:
        text = six_deep_map() if source == "6deep" else source
        try:
            compile_expression(text, WHERE)
        except ExpressionError as exc:
            print(f"  refused ({len(text)} chars) {label}: {exc.message}")
        else:
            print(f"  ACCEPTED (should be refused) {label}")
            worst = max(worst, TARGET_MS * 1000)
    verdict = "OK" if worst < TARGET_MS else "OVER"
    print(f"worst accepted: {worst:.3f} ms (target < {TARGET_MS:g} ms: {verdict})")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
