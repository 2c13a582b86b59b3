"""The batch plan (pure): which rows are skipped, re-evaluated, evaluated, held, released and
ordered, without a database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import parse_rule_files
from propready.adapters.store.properties import memory_json
from propready.core.batch_plan import (
    BatchPlan,
    PollMemory,
    PollScope,
    SourceRow,
    fingerprint,
    plan_batch,
    row_identity,
)
from propready.core.checkpoint import CursorTracker
from propready.core.facts import RowTyper
from propready.core.rules import RuleSet
from propready.core.triggers import FirstSight, StoredProperty, TriggerMemory

DENVER = ZoneInfo("America/Denver")
NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
CATALOG = load_catalog()
COLUMNS = (
    "external_property_id",
    "status",
    "construction_final_date",
    "rent",
    "street",
    "city",
    "state",
    "postal_code",
    "method_of_access",
    "onsite_contact_name",
    "onsite_contact_phone",
    "billing_entity_slug",
    "updated_at",
)
TYPER = RowTyper(COLUMNS, DENVER)
RULES = """
triggers:
  vacant_ready: property.status == "Vacant Unrented Ready"
  two_days_after_final: property.construction_final_date + duration("48h") <= now
rules:
  - id: photos
    triggered_by: [vacant_ready, two_days_after_final]
    services: [{slug: exterior_photos, quantity: 1}]
"""
CHANGE_RULES = """
triggers:
  rent_changed: has(previous.rent) && previous.rent != property.rent
rules:
  - id: photos
    triggered_by: [rent_changed]
    services: [{slug: exterior_photos, quantity: 1}]
"""


def rules(text: str = RULES) -> RuleSet:
    return parse_rule_files([("rules.yaml", text)], CATALOG)


def row(pid: str | None, status: str = "Occupied", **values: Any) -> SourceRow:
    facts: dict[str, Any] = {
        "external_property_id": pid,
        "status": status,
        "construction_final_date": None,
        "rent": 2150,
        "street": "4821 W Mulberry Dr",
        "city": "Denver",
        "state": "CO",
        "postal_code": "80205",
        "method_of_access": "rently",
        "onsite_contact_name": "Pat",
        "onsite_contact_phone": "+1 303-555-0100",
        "billing_entity_slug": "investment_entity_1",
        "updated_at": "2026-11-26T10:00:00",
    }
    facts.update(values)
    values_tuple = tuple(facts[c] for c in COLUMNS)
    return SourceRow(values_tuple, fingerprint(values_tuple), TYPER.property_id(values_tuple))


def scope(
    rule_set: RuleSet | None = None, *, full_pass: bool = True, first_sight: FirstSight = "ignore"
) -> PollScope:
    return PollScope(
        rules=rule_set or rules(),
        typer=RowTyper(COLUMNS, DENVER),
        catalog=CATALOG,
        zone=DENVER,
        first_sight=first_sight,
        default_window_hours=72,
        full_pass=full_pass,
        cursor_index=COLUMNS.index("updated_at"),
    )


def memory(held: dict[str, str] | None = None) -> PollMemory:
    return PollMemory(CursorTracker(NOW + timedelta(hours=1), DENVER), dict(held or {}))


def remembered(source: SourceRow, **triggers: tuple[bool, int]) -> StoredProperty:
    memory = {name: TriggerMemory(*value) for name, value in triggers.items()}
    return StoredProperty(source.digest, memory_json(memory))


def plan(
    rows: Sequence[SourceRow],
    stored: dict[str, StoredProperty] | None = None,
    poll_scope: PollScope | None = None,
    poll_memory: PollMemory | None = None,
    now: datetime = NOW,
) -> BatchPlan:
    return plan_batch(rows, stored or {}, poll_scope or scope(), poll_memory or memory(), now)


def test_a_new_home_is_stored_with_its_triggers_and_no_event_at_first_sight() -> None:
    """A home seen for the first time is inserted; a trigger already true waits (first_sight)."""
    result = plan([row("H1", "Vacant Unrented Ready")])
    (write,) = result.inserts
    assert write.external_property_id == "H1"
    assert write.triggers["vacant_ready"] == TriggerMemory(True, 0)
    assert (result.new, result.edges) == (1, [])


def test_first_sight_fire_decides_an_order_for_a_home_already_ready() -> None:
    """With first_sight = fire, the first sight of a ready home is an edge with its order."""
    result = plan([row("H1", "Vacant Unrented Ready")], poll_scope=scope(first_sight="fire"))
    (edge,) = result.edges
    assert (edge.edge.trigger_name, edge.edge.kind) == ("vacant_ready", "first_sight")
    assert edge.decision.rule_id == "photos"
    assert edge.plan is not None
    assert edge.plan.payload["services"] == [{"slug": "exterior_photos", "quantity": 1}]


def test_an_unchanged_row_is_skipped_without_evaluation() -> None:
    """Same fingerprint, every trigger remembered, nothing time-based: nothing to do."""
    source = row("H1")
    poll_scope = scope(full_pass=False)
    poll_memory = memory()
    stored = {"H1": remembered(source, vacant_ready=(False, 0), two_days_after_final=(False, 0))}
    result = plan([source], stored, poll_scope, poll_memory)
    assert result.unchanged == 1
    assert (result.inserts, result.updates, result.trigger_writes, result.edges) == ([], [], [], [])
    assert poll_memory.evaluator is not None
    assert poll_memory.evaluator.evaluations == 0


def test_a_changed_row_with_a_rising_edge_is_updated_and_ordered() -> None:
    """A changed row that makes a trigger rise is stored and decided, with an order request."""
    before = row("H1")
    stored = {"H1": remembered(before, vacant_ready=(False, 0), two_days_after_final=(False, 0))}
    result = plan([row("H1", "Vacant Unrented Ready")], stored)
    (update,) = result.updates
    assert update.triggers["vacant_ready"] == TriggerMemory(True, 1)
    (edge,) = result.edges
    assert (edge.edge.kind, edge.edge.edge_seq) == ("rising_edge", 1)
    assert edge.plan is not None
    assert edge.plan.external_property_id == "H1"
    assert "access_code" not in edge.event_facts or edge.event_facts["access_code"] is None


def test_time_based_triggers_move_on_full_passes_only() -> None:
    """An unchanged row's date condition is re-evaluated on a full pass, not on an incremental
    poll, and rising fires an edge."""
    source = row("H1", construction_final_date="2026-11-20")
    stored = {"H1": remembered(source, vacant_ready=(False, 0), two_days_after_final=(False, 0))}
    incremental = plan([source], stored, scope(full_pass=False))
    assert (incremental.trigger_writes, incremental.edges) == ([], [])
    full = plan([source], stored, scope(full_pass=True))
    (write,) = full.trigger_writes
    assert write.triggers["two_days_after_final"] == TriggerMemory(True, 1)
    assert [e.edge.trigger_name for e in full.edges] == ["two_days_after_final"]
    assert full.unchanged == 0  # the row did not change, but a trigger did


def test_a_change_based_trigger_falls_back_on_the_next_poll() -> None:
    """`previous` triggers are true only on the poll that saw the change, then re-arm."""
    rule_set = rules(CHANGE_RULES)
    source = row("H1", rent=2200)
    stored = {"H1": remembered(source, rent_changed=(True, 1))}
    result = plan([source], stored, scope(rule_set, full_pass=False))
    (write,) = result.trigger_writes
    assert write.triggers["rent_changed"] == TriggerMemory(False, 1)
    assert result.edges == []


def test_a_trigger_added_to_the_rules_is_evaluated_on_unchanged_rows() -> None:
    """A trigger the stored memory lacks is evaluated even though the row did not change."""
    source = row("H1")
    stored = {"H1": remembered(source, vacant_ready=(False, 0))}
    result = plan([source], stored, scope(full_pass=False))
    (write,) = result.trigger_writes
    assert write.triggers["two_days_after_final"] == TriggerMemory(False, 0)


def test_rows_without_an_id_and_repeated_ids_are_held() -> None:
    """No id: held under its hash; an id two rows share: both rows are held (which one is the
    home cannot be known), each under its own key, and nothing is stored or ordered for it."""
    result = plan([row(None), row("H1"), row("H1", "Vacant Unrented Ready"), row("H2")])
    keys = [(q.row_key[:1], q.problem.column) for q in result.quarantines]
    assert keys == [("#", "external_property_id")] + [("H", "external_property_id")] * 2
    assert all(q.row_key.startswith("H1#dup") for q in result.quarantines[1:])
    assert len({q.row_key for q in result.quarantines}) == 3
    assert [w.external_property_id for w in result.inserts] == ["H2"]
    assert result.quarantined == 3


def test_an_id_repeated_in_a_later_batch_holds_that_row_and_stays_held() -> None:
    """Between full passes, a repeat found in a later batch is held, and so is the id from then
    on; once the id is unique again (a full pass found no repeat), its held rows are released."""
    poll_memory = memory()
    plan([row("H1")], poll_memory=poll_memory)
    later = plan([row("H1", "Vacant Unrented Ready")], poll_memory=poll_memory)
    assert [q.row_key[:6] for q in later.quarantines] == ["H1#dup"]
    assert "H1" in poll_memory.ambiguous
    held = {later.quarantines[0].row_key: later.quarantines[0].row_hash}
    unique = plan([row("H1")], poll_memory=memory(held))
    assert unique.releases == list(held)


def test_a_bad_value_holds_the_row_once_and_a_fixed_row_is_released() -> None:
    """A value that fails a check holds the row; unchanged it is not held again; fixed, released."""
    bad = row("H1", state="XX")
    first = plan([bad])
    (held,) = first.quarantines
    assert (held.row_key, held.problem.column, held.known) == ("H1", "state", False)
    again = plan([bad], poll_memory=memory({"H1": bad.digest}))
    assert (again.quarantines, again.quarantined) == ([], 1)
    fixed_memory = memory({"H1": bad.digest})
    fixed = plan([row("H1")], poll_memory=fixed_memory)
    assert fixed.releases == ["H1"]
    assert fixed_memory.held == {}


def test_an_unexpected_error_in_one_row_holds_that_row_only() -> None:
    """A value CEL cannot take (a set) raises while evaluating: that row is held, the rest go on."""
    result = plan([row("H1", status={"Occupied"}), row("H2", "Vacant Unrented Ready")])
    (held,) = result.quarantines
    assert held.row_key == "H1"
    assert held.problem.column == "*"
    assert held.problem.reason.startswith("unexpected ")
    assert [w.external_property_id for w in result.inserts] == ["H2"]
    assert result.new == 1


def test_an_order_that_cannot_be_planned_keeps_its_reasons() -> None:
    """A rising edge whose row lacks a required payload field is decided with its problems."""
    before = row("H1", street=None)
    stored = {"H1": remembered(before, vacant_ready=(False, 0), two_days_after_final=(False, 0))}
    result = plan([row("H1", "Vacant Unrented Ready", street=None)], stored)
    (edge,) = result.edges
    assert edge.plan is None
    assert any("street" in problem for problem in edge.problems)


def test_the_cursor_is_the_largest_value_read_and_future_values_are_refused() -> None:
    """The checkpoint follows the maximum read in any order; a placeholder date does not count
    and is reported once, with the row processed."""
    poll_memory = memory()
    rows = [
        row("H1", updated_at="2026-11-27T09:00:00"),
        row("H2", updated_at="9999-12-31T00:00:00"),
        row("H3", updated_at="2026-11-20T09:00:00"),
    ]
    result = plan(rows, poll_memory=poll_memory)
    assert poll_memory.cursor.maximum == "2026-11-27T09:00:00"
    assert [(s.external_property_id, s.value) for s in result.suspicious_cursors] == [
        ("H2", "9999-12-31T00:00:00")
    ]
    assert result.new == 3


def test_trigger_values_are_reused_for_homes_with_the_same_inputs() -> None:
    """Homes whose trigger inputs are equal are evaluated once (CEL is deterministic)."""
    poll_memory = memory()
    plan([row(f"H{n}") for n in range(50)], poll_memory=poll_memory)
    assert poll_memory.evaluator is not None
    assert poll_memory.evaluator.evaluations == 2  # two triggers, once


def test_row_identity_marks_rows_the_poll_cannot_use() -> None:
    """Ids for loading stored state: None for a missing id or one read before."""
    ids = row_identity([row("H1"), row(None), row("H1"), row("H2")], {"H2"})
    assert ids == ["H1", None, None, None]
