"""Which configuration changes a running daemon can take on SIGHUP, and which need a restart.

Everything read afresh at each use (order mode, windows, intervals, vendor settings, the rules
folder, log level) is applied between cycles. A few keys define the daemon's identity or open
long-lived resources (the databases, the source query the rules were checked against, the
metrics socket, the instance name in leases, the log format): a change there is logged as
`config_restart_needed` and the running value is kept until `systemctl restart`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from propready.settings import Settings

RESTART_ONLY: frozenset[tuple[str, str]] = frozenset(
    {
        ("state", "url"),
        ("source", "url"),
        ("source", "query"),
        ("source", "cursor_column"),
        ("metrics", "listen"),
        ("daemon", "instance_name"),
        ("log", "format"),
    }
)
SECRET_KEYS: frozenset[tuple[str, str]] = frozenset({("planomatic", "api_key")})


@dataclass(frozen=True)
class ConfigChange:
    settings: Settings  # what to run with now: the new file, restart-only keys kept as they were
    applied: tuple[str, ...]  # "section.key" names that take effect now
    needs_restart: tuple[str, ...]  # "section.key" names changed in the file but kept for now

    def changed(self, section: str, key: str | None = None) -> bool:
        """Whether the reload applies a change to `section` (or to `section.key`)."""
        if key is not None:
            return f"{section}.{key}" in self.applied
        return any(name.startswith(f"{section}.") for name in self.applied)


def merge_reloaded(running: Settings, loaded: Settings) -> ConfigChange:
    """Compare the running settings with a freshly loaded file and decide what changes now."""
    applied: list[str] = []
    restart: list[str] = []
    sections: dict[str, Any] = {}
    for section in type(running).model_fields:
        old_section = getattr(running, section)
        new_section = getattr(loaded, section)
        keep: dict[str, Any] = {}
        for key in type(old_section).model_fields:
            old_value, new_value = getattr(old_section, key), getattr(new_section, key)
            if _comparable(section, key, old_value) == _comparable(section, key, new_value):
                continue
            if (section, key) in RESTART_ONLY:
                restart.append(f"{section}.{key}")
                keep[key] = old_value
            else:
                applied.append(f"{section}.{key}")
        sections[section] = new_section.model_copy(update=keep) if keep else new_section
    merged = loaded.model_copy(update=sections)
    return ConfigChange(merged, tuple(applied), tuple(restart))


def _comparable(section: str, key: str, value: Any) -> Any:
    if (section, key) in SECRET_KEYS:
        return value.get_secret_value()
    return value
