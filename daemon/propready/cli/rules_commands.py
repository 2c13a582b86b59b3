"""`propready rules ...`: validate rule files and run their tests before they order anything."""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from propready.adapters.database_urls import DatabaseSettingError
from propready.adapters.rulefiles import RuleFileError, load_rule_set
from propready.adapters.source import SourceUnavailable, query_columns
from propready.core.catalog import Catalog
from propready.core.rule_tests import actual_text, expected_text, run_rule_tests, trace_lines
from propready.core.rules import RuleSet
from propready.service.preflight import rule_problems_line
from propready.service.rules_reload import load_catalog_or_refuse
from propready.settings import ConfigError, Settings, load_settings, resolve_config_path
from propready.wiring import source_engine, utc_now


@dataclass(frozen=True, slots=True)
class _Target:
    path: Path
    catalog_path: Path | None
    known_fields: Collection[str] | None
    fields_note: str
    zone: tzinfo


def source_fields(settings: Settings) -> Collection[str]:
    """The source query's column names (run with LIMIT 0); SourceUnavailable if it fails."""
    try:
        engine = source_engine(settings)
    except DatabaseSettingError as exc:
        raise SourceUnavailable(str(exc)) from None
    try:
        return frozenset(query_columns(engine, settings.source.query))
    finally:
        engine.dispose()


def _target(
    ctx: click.Context, path: Path | None, catalog: Path | None, fields: str | None
) -> _Target:
    """What to load: PATH or [rules] path, the catalog, and the field names to check against.

    Field names come from --fields, else from the configured source query; without either,
    field names are not checked (and the output says so).
    """
    settings: Settings | None = None
    try:
        settings = load_settings(resolve_config_path(ctx.find_root().obj.get("config_path")))
    except ConfigError as exc:
        if path is None:
            raise click.UsageError(f"give a PATH or a usable config ({exc})") from None
    rules_path = path or (settings.rules.path if settings else Path())
    catalog_path = catalog or (settings.rules.catalog_path if settings else None)
    zone: tzinfo = settings.source.zone if settings else ZoneInfo("UTC")
    if fields is not None:
        given = frozenset(f.strip() for f in fields.split(",") if f.strip())
        return _Target(rules_path, catalog_path, given, "--fields", zone)
    if settings is None:
        return _Target(
            rules_path, catalog_path, None, "not checked (no config; use --fields)", zone
        )
    try:
        names = source_fields(settings)
    except SourceUnavailable as exc:
        return _Target(rules_path, catalog_path, None, f"not checked ({exc})", zone)
    return _Target(rules_path, catalog_path, names, "the source query", zone)


def _load(target: _Target) -> tuple[RuleSet, Catalog]:
    try:
        catalog = load_catalog_or_refuse(target.catalog_path)
        return load_rule_set(target.path, catalog, target.known_fields), catalog
    except RuleFileError as exc:
        if len(exc.problems) == 1 and exc.problems[0].location.line == 0:
            # A path that cannot be used (missing, empty, not YAML): one line says it all.
            click.echo(f"propready: {rule_problems_line(exc)}", err=True)
            sys.exit(1)
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {target.path}", err=True)
        sys.exit(1)


_PATH = click.argument(
    "path", required=False, type=click.Path(exists=True, path_type=Path), metavar="[PATH]"
)
_CATALOG = click.option(
    "--catalog",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra service catalog file [default: [rules] catalog_path].",
)
_FIELDS = click.option(
    "--fields",
    metavar="A,B,...",
    help="The source query's column names [default: run the configured query with LIMIT 0].",
)


@click.group("rules")
def rules_group() -> None:
    """Work with rule files (YAML with CEL conditions).

    \b
    Example:
      propready rules check rules/
      propready rules test rules/
    """


@rules_group.command("check")
@_PATH
@_CATALOG
@_FIELDS
@click.pass_context
def check_command(
    ctx: click.Context, path: Path | None, catalog: Path | None, fields: str | None
) -> None:
    """Validate rule files and print every problem with its file and line; exit 1 if any.

    PATH is a rule file or a folder of *.yaml files; without it, [rules] path from the config.
    Every `property.NAME` must be a column of the source query (--fields, or the configured
    query run with LIMIT 0).

    \b
    Example:
      propready rules check /etc/propready/rules
      propready rules check candidate/ --fields external_property_id,status,bedrooms
    """
    target = _target(ctx, path, catalog, fields)
    rule_set, _catalog = _load(target)
    click.echo(
        f"OK: {len(rule_set.triggers)} triggers, {len(rule_set.rules)} rules, "
        f"{len(rule_set.tests)} tests, version {rule_set.version} ({target.path}); "
        f"field names: {target.fields_note}"
    )


@rules_group.command("test")
@_PATH
@_CATALOG
@_FIELDS
@click.option("--verbose", "-v", is_flag=True, help="Show the decision trace of passing cases too.")
@click.pass_context
def test_command(
    ctx: click.Context, path: Path | None, catalog: Path | None, fields: str | None, verbose: bool
) -> None:
    """Run the test cases written in the rule files; show a diff for each failure; exit 1 if any.

    A case gives a property's facts and a trigger and expects services, a rule, or no order.

    \b
    Example:
      propready rules test rules/
    """
    target = _target(ctx, path, catalog, fields)
    rule_set, loaded_catalog = _load(target)
    outcomes = run_rule_tests(rule_set, target.zone, utc_now(), loaded_catalog)
    for outcome in outcomes:
        test = outcome.test
        mark = "PASS" if outcome.passed else "FAIL"
        click.echo(f"{mark}  {test.location}  {test.name}")
        if outcome.passed and not verbose:
            continue
        click.echo(f"      expected: {expected_text(test)}")
        click.echo(f"      actual:   {actual_text(outcome)}")
        for difference in outcome.differences:
            click.echo(f"        {difference}")
        if outcome.decision is not None:
            for line in trace_lines(outcome.decision):
                click.echo(f"      {line}")
    failed = sum(1 for o in outcomes if not o.passed)
    click.echo(
        f"{len(outcomes) - failed} passed, {failed} failed ({target.path}, version "
        f"{rule_set.version})"
    )
    if not outcomes:
        click.echo("no test cases: add a `tests:` section to the rule files", err=True)
    if failed:
        sys.exit(1)
