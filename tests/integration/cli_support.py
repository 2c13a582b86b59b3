"""Running the command line in the test process: fast, and what `propready` itself runs."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from propready.cli.main import run


def run_cli(args: Sequence[str]) -> int:
    """`propready ARGS` in this process; its exit code.

    Commands configure structlog to write to the stderr of the moment (pytest's capture), so the
    configuration is reset afterwards: a later test must not log into a closed capture.
    """
    try:
        return run(list(args))
    finally:
        structlog.reset_defaults()
