"""`propready rules ...`: validate rule files before they order anything."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from propready.adapters.catalog_file import load_catalog
from propready.adapters.rulefiles import RuleFileError, load_rule_set
from propready.settings import ConfigError, load_settings, resolve_config_path


def _rules_path(ctx: click.Context, path: Path | None) -> tuple[Path, Path | None]:
    """PATH if given, else [rules] path from the config (with its catalog)."""
    if path is not None:
        return path, None
    config_path = ctx.find_root().obj.get("config_path")
    try:
        settings = load_settings(resolve_config_path(config_path))
    except ConfigError as exc:
        raise click.UsageError(f"give a PATH or a usable config ({exc})") from None
    return settings.rules.path, settings.rules.catalog_path


@click.group("rules")
def rules_group() -> None:
    """Work with rule files (YAML with CEL conditions).

    \b
    Example:
      propready rules check rules/
    """


@rules_group.command("check")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--catalog",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra service catalog file.",
)
@click.pass_context
def check_command(ctx: click.Context, path: Path | None, catalog: Path | None) -> None:
    """Validate rule files and print every problem with its file and line; exit 1 if any.

    PATH is a rule file or a folder of *.yaml files; without it, [rules] path from the config.

    \b
    Example:
      propready rules check /etc/propready/rules
    """
    rules_path, catalog_path = _rules_path(ctx, path)
    try:
        rule_set = load_rule_set(rules_path, load_catalog(catalog or catalog_path))
    except RuleFileError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {rules_path}", err=True)
        sys.exit(1)
    click.echo(
        f"OK: {len(rule_set.triggers)} triggers, {len(rule_set.rules)} rules, "
        f"version {rule_set.version} ({rules_path})"
    )
