"""Progress for long reads of the PM database: a rich bar on a terminal, nothing otherwise.

It writes to stderr and only when stderr is a terminal, so piped, CSV and JSON output stay
clean, and it disappears when done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@contextmanager
def row_progress(description: str) -> Iterator[Callable[[], None]]:
    """A callable to call once per row read; shows a live count on a terminal."""
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=None)

        def advance() -> None:
            progress.advance(task)

        yield advance
