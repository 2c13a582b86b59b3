"""`propready`: the command line, a thin shell over the service layer and the stores."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

from propready import __version__
from propready.adapters.database_urls import DatabaseSettingError
from propready.adapters.rulefiles import RuleFileError
from propready.adapters.source import SourceUnavailable
from propready.cli.attention_commands import attention_group
from propready.cli.audit_commands import audit_command, explain_command
from propready.cli.backfill_command import backfill_command
from propready.cli.db_commands import db_group
from propready.cli.deploy_command import deploy_files_command
from propready.cli.notify_commands import notify_group
from propready.cli.orders_commands import orders_group
from propready.cli.reorder_command import reorder_command
from propready.cli.report_command import report_command
from propready.cli.rules_commands import rules_group
from propready.cli.run_commands import check_command, run_command
from propready.cli.sandbox_command import sandbox_command
from propready.cli.sending_commands import sending_group
from propready.cli.serve_command import serve_command
from propready.cli.simulate_command import simulate_command
from propready.cli.users_commands import users_group
from propready.cli.webhooks_commands import webhooks_group
from propready.cli.writeback_commands import writeback_group
from propready.log import REDACTOR
from propready.service.preflight import rule_problems_line
from propready.settings import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
log = structlog.get_logger("propready.cli")


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
    serve_command,
    webhooks_group,
    sending_group,
    reorder_command,
    deploy_files_command,
    attention_group,
    notify_group,
    writeback_group,
    users_group,  # the web console's users
):
    cli.add_command(command)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line; every known failure becomes one line on stderr and an exit code.

    Exit codes: 0 done, 1 failed (unreachable, refused, FAIL), 2 configuration or usage error,
    130 interrupted. An unexpected error is not swallowed: one line on stderr, the traceback in
    the log at error level, exit 1.
    """
    try:
        # standalone_mode=False returns the code of ctx.exit(N) instead of exiting with it.
        code = cli.main(args=argv, prog_name="propready", standalone_mode=False)
    except click.exceptions.Abort:
        return _fail("aborted", 130)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "propready"
        sys.stderr.write(f"{where}: {_one_line(exc.format_message())} (see `{where} --help`)\n")
        return exc.exit_code
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except ConfigError as exc:
        return _fail(f"config error: {exc}", 2)
    except DatabaseSettingError as exc:
        return _fail(str(exc), exc.exit_code)
    except RuleFileError as exc:
        return _fail(rule_problems_line(exc), 2)
    except SourceUnavailable as exc:
        return _fail(str(exc), 1)
    except SystemExit as exc:  # sys.exit(N) inside a command
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:
        log.error("unexpected_error", command=" ".join(argv or sys.argv[1:]), exc_info=True)
        return _fail(f"unexpected error: {type(exc).__name__}: {_first_line(exc)} (see the log)", 1)
    return code if isinstance(code, int) else 0


def main() -> None:
    """Console entry point (`propready`)."""
    sys.exit(run())


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"propready: {_one_line(message)}\n")
    return code


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return REDACTOR.scrub_text(text.splitlines()[0] if text else "")
