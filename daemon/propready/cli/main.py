"""`propready`: the command line, a thin shell over the service layer and the stores."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from propready import __version__
from propready.adapters.rulefiles import RuleFileError
from propready.adapters.source import SourceUnavailable
from propready.cli.attention_commands import attention_group
from propready.cli.audit_commands import audit_command, explain_command
from propready.cli.backfill_command import backfill_command
from propready.cli.db_commands import db_group
from propready.cli.notify_commands import notify_group
from propready.cli.orders_commands import orders_group
from propready.cli.report_command import report_command
from propready.cli.rules_commands import rules_group
from propready.cli.run_commands import check_command, run_command
from propready.cli.sandbox_command import sandbox_command
from propready.cli.simulate_command import simulate_command
from propready.settings import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file [default: $PROPREADY_CONFIG, then /etc/propready/propready.toml].",
)
@click.version_option(__version__, prog_name="propready")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """propready: orders PlanOmatic media the moment a rental home is ready, exactly once.

    It polls the property-management database, detects readiness (a status reached, a date
    entered), applies the rule files, places orders through the PlanOmatic V3 API and records
    every decision in an audit log.

    \b
    Example:
      propready --config /etc/propready/propready.toml run --once
    """
    ctx.obj = {"config_path": config_path}


for command in (
    run_command,
    check_command,
    db_group,
    rules_group,
    orders_group,
    audit_command,
    explain_command,
    report_command,
    sandbox_command,
    simulate_command,
    backfill_command,
    attention_group,
    notify_group,
):
    cli.add_command(command)


def main() -> None:
    """Console entry point: known failures become one line on stderr and an exit code."""
    try:
        # standalone_mode=False returns the code of ctx.exit(N) instead of exiting with it.
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        sys.stderr.write(f"propready: config error: {exc}\n")
        sys.exit(2)
    except RuleFileError as exc:
        sys.stderr.write("propready: the rule files cannot be used:\n")
        for problem in exc.problems:
            sys.stderr.write(f"  {problem}\n")
        sys.exit(2)
    except SourceUnavailable as exc:
        sys.stderr.write(f"propready: {exc}\n")
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
