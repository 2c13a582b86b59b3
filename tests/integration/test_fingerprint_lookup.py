"""The poll's lookup of remembered homes: on PostgreSQL, fingerprints with a yes/no for a
complete trigger memory (all an unchanged row needs); the memory itself otherwise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from propready.adapters.store import properties
from propready.adapters.store.engine import create_state_engine
from propready.core.batch_plan import PropertyWrite
from propready.core.triggers import TriggerMemory, json_keys

NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)


def test_complete_keys_answer_per_home_whether_every_trigger_is_remembered(
    state_url: str,
) -> None:
    engine = create_state_engine(state_url)
    memory = {"vacant_ready": TriggerMemory(False, 0), "construction_final": TriggerMemory(True, 1)}
    try:
        with engine.begin() as connection:
            properties.insert_properties(
                connection,
                [
                    PropertyWrite("H1", "hash-1", {}, memory),
                    PropertyWrite("H2", "hash-2", {}, {"vacant_ready": TriggerMemory(True, 1)}),
                ],
                NOW,
            )
        names = {"vacant_ready", "construction_final"}
        with engine.connect() as connection:
            quick = properties.load_properties(
                connection, ["H1", "H2", "H3"], with_facts=False, complete_keys=names
            )
            whole = properties.load_properties(connection, ["H1", "H2"], with_facts=False)
        assert set(quick) == {"H1", "H2"}  # H3 was never seen
        assert quick["H1"].row_hash == "hash-1"
        assert quick["H1"].remembers_keys(json_keys(names))
        assert not quick["H2"].remembers_keys(json_keys(names))
        if engine.dialect.name == "postgresql":
            assert (quick["H1"].complete, quick["H2"].complete) == (True, False)
            with pytest.raises(RuntimeError, match="only the fingerprint was loaded"):
                _ = quick["H1"].triggers  # the memory was not read: never use it by mistake
        assert whole["H1"].triggers == memory
        assert whole["H2"].complete is None
        assert not whole["H2"].remembers_keys(json_keys(names))
    finally:
        engine.dispose()
