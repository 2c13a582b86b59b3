"""SIGHUP config reload: what a running daemon applies now and what waits for a restart."""

from __future__ import annotations

from pydantic import SecretStr

from propready.runtime.config_reload import merge_reloaded
from propready.settings import Settings


def _settings(**sections: dict[str, object]) -> Settings:
    data: dict[str, object] = {"source": {"url": "sqlite:///pm.db", "query": "SELECT 1"}}
    for name, values in sections.items():
        base = data.get(name, {})
        assert isinstance(base, dict)
        data[name] = {**base, **values}
    return Settings(**data)  # type: ignore[arg-type]


def test_runtime_keys_apply_and_restart_only_keys_keep_their_running_value() -> None:
    running = _settings(orders={"mode": "dry_run"}, state={"url": "sqlite:///a.db"})
    loaded = _settings(
        orders={"mode": "live", "duplicate_window_hours": 24},
        state={"url": "sqlite:///b.db"},
        source={"url": "sqlite:///pm.db", "query": "SELECT 2", "poll_interval_seconds": 30},
    )
    change = merge_reloaded(running, loaded)
    assert set(change.applied) == {
        "orders.mode",
        "orders.duplicate_window_hours",
        "source.poll_interval_seconds",
    }
    assert set(change.needs_restart) == {"state.url", "source.query"}
    assert change.settings.orders.mode == "live"
    assert change.settings.source.poll_interval_seconds == 30
    assert change.settings.state.url == "sqlite:///a.db"
    assert change.settings.source.query == "SELECT 1"
    assert change.changed("orders")
    assert change.changed("orders", "mode")
    assert not change.changed("planomatic")


def test_an_unchanged_file_changes_nothing() -> None:
    change = merge_reloaded(_settings(), _settings())
    assert change.applied == ()
    assert change.needs_restart == ()


def test_a_new_api_key_is_seen_as_a_change_without_showing_it() -> None:
    running = _settings(planomatic={"api_key": "old-secret"})
    loaded = _settings(planomatic={"api_key": "new-secret"})
    change = merge_reloaded(running, loaded)
    assert change.applied == ("planomatic.api_key",)
    assert change.settings.planomatic.api_key == SecretStr("new-secret")
    assert "new-secret" not in repr(change)
