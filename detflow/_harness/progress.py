"""A live progress bar on a terminal; nothing elsewhere (the report lines are the progress)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress", "make_progress"]


class Progress:
    """Does nothing: used when output is not a terminal or rich is not installed."""

    def update(self, done: int) -> None:
        """Show ``done`` batches of the total."""

    def close(self) -> None:
        """Remove the bar."""


class _RichProgress(Progress):
    def __init__(self, total: int, done: int, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar: Any = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self._task = self._bar.add_task(description, total=total, completed=done)
        self._bar.start()

    def update(self, done: int) -> None:
        self._bar.update(self._task, completed=done)

    def close(self) -> None:
        self._bar.stop()


def make_progress(total: int, done: int, description: str = "training") -> Progress:
    """A rich bar when stderr is a terminal and rich is installed, else a silent one.

    >>> make_progress(10, 0).update(5)  # not a terminal under doctest: silent
    """
    if not sys.stderr.isatty():
        return Progress()
    try:
        return _RichProgress(total, done, description)
    except ImportError:
        return Progress()
