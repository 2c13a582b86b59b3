"""Shared helpers for commands: loading settings once, logging set-up."""

from __future__ import annotations

import getpass
import os
import socket
import sys

import click

from propready.log import configure_logging
from propready.settings import Settings, load_settings, resolve_config_path


def settings_from(ctx: click.Context, *, logs_to_stdout: bool = False) -> Settings:
    """Load the configuration named by --config / $PROPREADY_CONFIG and configure logging.

    Logs go to stderr so they never mix with a command's output; the daemon logs to stdout,
    which systemd hands to journald.
    """
    root = ctx.find_root()
    cached = root.obj.get("settings") if root.obj else None
    if isinstance(cached, Settings):
        return cached
    settings = load_settings(resolve_config_path(root.obj.get("config_path")))
    configure_logging(
        fmt=settings.log.format,
        level=settings.log.level,
        secret_values=settings.secret_values(),
        stream=sys.stdout if logs_to_stdout else sys.stderr,
    )
    root.obj["settings"] = settings
    return settings


def operator_name() -> str:
    """Who is acting, for the audit log: the user behind sudo if any, on this host."""
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"
