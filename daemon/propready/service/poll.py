"""Poll: read the source, record trigger edges, decide each new readiness event, plan orders.

Each batch of properties is one transaction: memory, events, decisions, outbox rows and their
audit rows commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import structlog

from propready.adapters.source import stream_rows
from propready.adapters.store import audit, properties
from propready.core.expressions import EvaluationScope
from propready.core.facts import RowProblem, facts_for_storage, type_row
from propready.core.model import PropertySnapshot
from propready.core.rules import trigger_values
from propready.core.triggers import detect_edges
from propready.service.components import Components, CycleSummary
from propready.service.decide import handle_edge

log = structlog.get_logger("propready.poll")


def poll(components: Components, now: Callable[[], datetime], summary: CycleSummary) -> None:
    """Read the whole source, record trigger edges, and decide each new readiness event."""
    source = components.settings.source
    batch: list[PropertySnapshot] = []
    for item in _typed_rows(
        stream_rows(components.source, source.query, source.batch_size), components, summary
    ):
        if isinstance(item, RowProblem):
            _quarantine(components, item, now())
            continue
        batch.append(item)
        if len(batch) >= source.batch_size:
            _process_batch(components, batch, now(), summary)
            batch = []
    if batch:
        _process_batch(components, batch, now(), summary)


def _typed_rows(
    rows: Iterable[Any], components: Components, summary: CycleSummary
) -> Iterator[PropertySnapshot | RowProblem]:
    zone = components.settings.source.zone
    seen: set[str] = set()
    for row in rows:
        summary.rows += 1
        item = type_row(row, zone)
        if isinstance(item, PropertySnapshot):
            if item.external_property_id in seen:
                item = RowProblem(
                    item.external_property_id,
                    "external_property_id",
                    "the source query returned this id twice",
                )
            else:
                seen.add(item.external_property_id)
        if isinstance(item, RowProblem):
            summary.quarantined += 1
        yield item


def _quarantine(components: Components, problem: RowProblem, now: datetime) -> None:
    log.warning(
        "source_row_quarantined",
        property=problem.external_property_id,
        column=problem.column,
        reason=problem.reason,
    )
    with components.state.begin() as connection:
        audit.record(
            connection,
            "source_row_quarantined",
            now,
            external_property_id=problem.external_property_id,
            detail={"column": problem.column, "reason": problem.reason},
        )


def _row_hash(facts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def _process_batch(
    components: Components, batch: list[PropertySnapshot], now: datetime, summary: CycleSummary
) -> None:
    settings = components.settings
    ids = [s.external_property_id for s in batch]
    with components.state.begin() as connection:
        memory = properties.load_trigger_memory(connection, ids)
        hashes = properties.load_row_hashes(connection, ids)
        for snapshot in batch:
            property_id = snapshot.external_property_id
            stored = facts_for_storage(snapshot.public_facts())
            row_hash = _row_hash(facts_for_storage(dict(snapshot.facts)))
            is_new = property_id not in memory
            previous = memory.get(property_id)
            if is_new:
                summary.new_properties += 1
            if is_new or hashes.get(property_id) != row_hash:
                properties.save_property(
                    connection, property_id, row_hash, stored, now, is_new=is_new, changed=True
                )
            scope = EvaluationScope(snapshot.facts, now, settings.source.zone)
            values, errors = trigger_values(components.rules, scope)
            updates = detect_edges(previous, values, settings.orders.first_sight)
            properties.save_trigger_updates(connection, property_id, updates, previous or {}, now)
            for update in updates:
                if update.edge is not None:
                    handle_edge(
                        components,
                        connection,
                        snapshot,
                        update.edge,
                        scope,
                        stored,
                        now,
                        summary,
                        errors,
                    )
