"""Trigger values for many properties at one moment, remembered by the facts they read (pure).

A trigger's value depends only on the fields it reads (and `now`/`today`, and the `previous`
fields it reads): CEL is deterministic. Across a portfolio the fields triggers read repeat a lot
(a status has a dozen values, a date a few hundred), so the values computed for one property
serve every property with the same inputs. The memory is keyed by each input's type and value
(an int 2150 and a Decimal 2150.00 are different inputs to CEL), is bounded, and is dropped
when the moment changes. A trigger that reads the property map as a whole is evaluated per
property.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

from propready.core.expressions import EvaluationScope
from propready.core.rules import RuleSet, trigger_values

TriggerValues = tuple[dict[str, bool], dict[str, str]]

MAX_REMEMBERED = 50_000
_ABSENT = object()


class TriggerEvaluator:
    """Evaluates a rule set's triggers at one moment; built once per poll batch."""

    def __init__(self, rules: RuleSet, now: datetime, zone: tzinfo) -> None:
        self.rules = rules
        self.now = now
        self.zone = zone
        analysis = rules.analysis
        self._fields = tuple(sorted(analysis.fields)) if analysis.fields is not None else None
        self._previous_fields: tuple[str, ...] | None = ()
        if analysis.change_based:
            remembered = analysis.remembered
            self._previous_fields = tuple(sorted(remembered)) if remembered is not None else None
        self._memory: dict[tuple[Any, ...], TriggerValues] = {}
        self.evaluations = 0  # CEL evaluations actually run (for benchmarks and tests)

    def at(self, now: datetime) -> TriggerEvaluator:
        """This evaluator, or a fresh one when the moment moved (values may have changed)."""
        if now == self.now:
            return self
        return TriggerEvaluator(self.rules, now, self.zone)

    def values(
        self,
        facts: Mapping[str, Any],
        names: frozenset[str],
        previous: Mapping[str, Any] | None,
    ) -> TriggerValues:
        """The triggers `names` for one property, and the errors that made some false."""
        key = self._key(facts, names, previous)
        if key is not None:
            try:
                found = self._memory.get(key)
            except TypeError:  # a list or map value (an array column): no key for it
                key, found = None, None
            if found is not None:
                return dict(found[0]), dict(found[1])
        narrow = (
            facts if self._fields is None else {k: facts[k] for k in self._fields if k in facts}
        )
        scope = EvaluationScope(narrow, self.now, self.zone, previous=previous)
        result = trigger_values(self.rules, scope, names)
        self.evaluations += len(names)
        if key is not None:
            if len(self._memory) >= MAX_REMEMBERED:
                self._memory.clear()
            self._memory[key] = (dict(result[0]), dict(result[1]))
        return result

    def _key(
        self,
        facts: Mapping[str, Any],
        names: frozenset[str],
        previous: Mapping[str, Any] | None,
    ) -> tuple[Any, ...] | None:
        fields, previous_fields = self._fields, self._previous_fields
        if fields is None or previous_fields is None:
            return None  # some expression reads a whole map: no finite key
        current = tuple([facts.get(name, _ABSENT) for name in fields])
        if not previous_fields:
            return (names, current, tuple(map(type, current)))
        earlier = previous or {}
        before = tuple([earlier.get(name, _ABSENT) for name in previous_fields])
        return (names, current, tuple(map(type, current)), before, tuple(map(type, before)))
