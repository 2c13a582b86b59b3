"""Hot reload of the rule files: validate, then swap atomically, or keep the last good rules.

The daemon calls `reload("SIGHUP")` on SIGHUP and `check_files()` every few seconds. A new set
is validated completely (YAML, CEL, triggers, catalog, the source query's field names) before it
replaces `components.rules`; the swap waits for `cycle_lock`, which the daemon holds around each
cycle, so a cycle never sees two rule sets. A refused reload is logged and audited
(`rules_reload_refused`) and the daemon keeps running its last good rules; `propready check`
reports the refusal from the audit log until a later load or reload succeeds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
import yaml

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rule_yaml import RuleProblem
from propready.adapters.rulefiles import RuleFileError, load_rule_set, rule_files_in
from propready.adapters.source import SourceUnavailable, query_columns
from propready.adapters.store import audit
from propready.adapters.store.engine import create_state_engine
from propready.adapters.store.rules_status import latest_rules_event_per_host
from propready.core.audit_kinds import AuditKind
from propready.core.catalog import Catalog, CatalogError
from propready.core.expressions import SourceLocation
from propready.core.rules import RuleSet
from propready.service.components import Components
from propready.settings import Settings

log = structlog.get_logger("propready.rules")

MAX_AUDITED_PROBLEMS = 50

Fingerprint = tuple[tuple[str, int, int], ...]


def known_source_fields(source: sa.Engine, query: str) -> Collection[str] | None:
    """The source query's columns (LIMIT 0), or None when the source cannot say right now.

    An unreachable PM database must not stop a rule fix from loading, so field names are then
    left unchecked (and the log says so); everything else is still validated.
    """
    try:
        return frozenset(query_columns(source, query))
    except SourceUnavailable as exc:
        log.warning("rule_fields_not_checked", reason=str(exc))
        return None


def load_checked_rules(settings: Settings, source: sa.Engine) -> tuple[RuleSet, Catalog]:
    """The rule set and catalog, validated against the source query's field names.

    Raises RuleFileError (a bad catalog file is reported the same way).
    """
    catalog = load_catalog_or_refuse(settings.rules.catalog_path)
    fields = known_source_fields(source, settings.source.query)
    return load_rule_set(settings.rules.path, catalog, fields), catalog


def load_catalog_or_refuse(path: Path | None) -> Catalog:
    """The bundled catalog extended by `path`; RuleFileError naming rules.catalog_path if the
    file cannot be read or is malformed."""
    try:
        return load_catalog(path)
    except (CatalogError, OSError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = SourceLocation(str(path or "catalog"), 0)
        problem = f"rules.catalog_path: {path}: {reason.splitlines()[0] if reason else exc}"
        raise RuleFileError([RuleProblem(where, problem)]) from None


class RuleReloader:
    def __init__(self, components: Components, clock: Callable[[], datetime]) -> None:
        self.components = components
        self.clock = clock
        self.cycle_lock = threading.Lock()  # held around each cycle and around the swap
        self._reload_lock = threading.Lock()  # one validation at a time (SIGHUP + file watch)
        self._seen = self.fingerprint()
        self._refusal_pending = False

    def run_guarded(self, cycle: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one cycle while no swap can happen (the daemon schedules polls through this)."""
        with self.cycle_lock:
            return cycle(*args, **kwargs)

    def fingerprint(self) -> Fingerprint:
        """Names, sizes and modification times of the rule files and the extra catalog."""
        settings = self.components.settings
        paths = list(rule_files_in(settings.rules.path)) if settings.rules.path.exists() else []
        if settings.rules.catalog_path is not None:
            paths.append(settings.rules.catalog_path)
        found = []
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    def record_startup(self) -> None:
        """Audit the rule set the daemon starts with (so an older refusal is no longer pending)."""
        rules = self.components.rules
        self._audit(
            AuditKind.RULES_LOADED,
            rules.version,
            {"cause": "startup", "rules": len(rules.rules), "triggers": len(rules.triggers)},
        )

    def check_files(self) -> bool:
        """Reload if a rule file (or the catalog) changed since the last look; True if swapped."""
        current = self.fingerprint()
        if current == self._seen:
            return False
        return self.reload("file change")

    def reload(self, cause: str) -> bool:
        """Validate the files and swap them in; True if the rules changed."""
        with self._reload_lock:
            self._seen = self.fingerprint()
            old = self.components.rules
            try:
                new, catalog = load_checked_rules(self.components.settings, self.components.source)
            except RuleFileError as exc:
                self._refuse(cause, old, [str(p) for p in exc.problems])
                return False
            if new.version == old.version:
                log.info("rules_unchanged", cause=cause, rules_version=old.version)
                if self._refusal_pending:  # the files are back to what runs: say so in the audit
                    self._refusal_pending = False
                    self._audit(
                        AuditKind.RULES_LOADED,
                        old.version,
                        {"cause": cause, "note": "the files match the running rules again"},
                    )
                return False
            self._refusal_pending = False
            with self.cycle_lock:
                self.components.rules = new
                self.components.catalog = catalog
            log.info(
                AuditKind.RULES_RELOADED,
                cause=cause,
                from_version=old.version,
                rules_version=new.version,
                rules=len(new.rules),
            )
            self._audit(
                AuditKind.RULES_RELOADED,
                new.version,
                {
                    "cause": cause,
                    "from_version": old.version,
                    "to_version": new.version,
                    "rules": len(new.rules),
                    "triggers": len(new.triggers),
                },
            )
            return True

    def _refuse(self, cause: str, kept: RuleSet, problems: list[str]) -> None:
        self._refusal_pending = True
        log.error(
            AuditKind.RULES_RELOAD_REFUSED,
            cause=cause,
            kept_version=kept.version,
            problems=problems[:MAX_AUDITED_PROBLEMS],
        )
        self._audit(
            AuditKind.RULES_RELOAD_REFUSED,
            kept.version,
            {
                "cause": cause,
                "kept_version": kept.version,
                "problem_count": len(problems),
                "problems": problems[:MAX_AUDITED_PROBLEMS],
            },
        )

    def _audit(self, kind: AuditKind, version: str, detail: dict[str, Any]) -> None:
        try:
            with self.components.state.begin() as connection:
                audit.record(connection, kind, self.clock(), rules_version=version, detail=detail)
        except sa.exc.SQLAlchemyError as exc:
            # The swap (or refusal) already happened; a state database hiccup must not undo it.
            log.error("rules_audit_failed", kind=kind, error=type(exc).__name__)


def pending_refusals(state_url: str) -> list[str]:
    """One line per host whose latest rules event is a refused reload (for `propready check`).

    Empty when the state database cannot be read: the state check reports that on its own.
    """
    engine = create_state_engine(state_url)
    try:
        with engine.connect() as connection:
            rows = latest_rules_event_per_host(connection)
    except sa.exc.SQLAlchemyError:
        return []
    finally:
        engine.dispose()
    lines = []
    for row in rows:
        if row["kind"] != AuditKind.RULES_RELOAD_REFUSED:
            continue
        detail = row["detail"] or {}
        problems = detail.get("problems") or ["(no detail)"]
        lines.append(
            f"{row['host']} refused a reload at {row['at']:%Y-%m-%d %H:%M:%S} UTC and keeps "
            f"running version {detail.get('kept_version')}; {detail.get('problem_count')} "
            f"problem(s), first: {problems[0]}"
        )
    return lines
