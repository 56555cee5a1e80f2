"""Progress bars for long commands (rich): count, rate and time left, on stderr.

Shown only when stderr is a terminal and ``--quiet`` is not given, so logs, pipes, CI and tests
see no control characters. When off, each step is logged at INFO instead (what ``process``
printed before).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


def enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def bar(
    description: str, total: int | None, unit: str, show: bool
) -> Iterator[Callable[[str], None]]:
    """A step function: each call advances the bar by one `unit` and shows the message (or,
    with the bar off, logs it)."""
    if not show:
        yield log.info
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
    )
    with Progress(*columns, console=_console(), transient=False) as progress:
        task = progress.add_task(description, total=total, rate="", last="")

        def step(message: str) -> None:
            progress.advance(task)
            speed = progress.tasks[task].speed
            rate = f"{speed:.2f} {unit}/s" if speed else ""
            progress.update(task, rate=rate, last=message[:60])

        yield step
