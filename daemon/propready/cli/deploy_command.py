"""`propready deploy-files DIR`: write out the systemd units, example config, runbook and rules."""

from __future__ import annotations

from pathlib import Path

import click

from propready.adapters.deploy_files import DeployFilesError, write_deploy_files


@click.command("deploy-files")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that are already there.")
def deploy_files_command(folder: Path, force: bool) -> None:
    """Write the deployment files this version ships into FOLDER and list them.

    The systemd unit(s), the example config, the runbook and the example rule files (under
    rules/), exactly as the installed version ships them: install from there (see RUNBOOK.md),
    and compare them with your copies after an upgrade. Files already in FOLDER are not
    overwritten without --force.

    \b
    Example:
      propready deploy-files /tmp/propready-files
      diff -u /etc/systemd/system/propready.service /tmp/propready-files/propready.service
    """
    try:
        written = write_deploy_files(folder, force=force)
    except DeployFilesError as exc:
        raise click.ClickException(f"deploy-files: {exc}") from None
    for path in written:
        click.echo(str(path))
