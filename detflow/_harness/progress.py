"""A live progress bar on a terminal, sharing it with the log; nothing elsewhere.

While the bar is shown, every line bound for the same terminal (log records of any
``StreamHandler``, ``print`` to ``sys.stdout`` / ``sys.stderr``) is printed above it through
the bar's console, so no log text lands on the bar's line and each record redraws the bar at
the count it was last given. The bar is transient: once closed, only the log is left in
the scrollback. Without a terminal on stderr, or without ``rich``, there is no bar.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any, TextIO, cast

__all__ = ["Progress", "make_progress"]


class Progress:
    """Does nothing: used when output is not a terminal or rich is not installed."""

    def update(self, done: int) -> None:
        """Show ``done`` batches of the total."""

    def close(self) -> None:
        """Remove the bar."""


class _AboveBar:
    """A text stream that prints whole lines above the live bar (through its console),
    the bar redrawn below them as it stands now."""

    def __init__(self, bar: Any, original: IO[str]) -> None:
        self._bar = bar
        self._original = original
        self._pending = ""

    def write(self, text: str) -> int:
        from rich.text import Text

        *lines, self._pending = (self._pending + text).split("\n")
        if lines:
            self._bar.refresh()  # else the bar below the lines is its last periodic drawing
            for line in lines:
                self._bar.console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.write("\n")

    def isatty(self) -> bool:
        return False  # nobody else should draw on the bar's terminal meanwhile

    def fileno(self) -> int:
        return self._original.fileno()


def _same_terminal(stream: Any, terminal: os.stat_result) -> bool:
    """Whether ``stream`` writes to the terminal ``terminal`` describes."""
    try:
        return os.isatty(stream.fileno()) and os.path.samestat(os.fstat(stream.fileno()), terminal)
    except (AttributeError, OSError, ValueError):
        return False


class _Routed:
    """The streams that now print above the bar, and how to put them back."""

    def __init__(self, bar: Any, stream: IO[str]) -> None:
        terminal = os.fstat(stream.fileno())
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []
        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for logger in loggers:
            for handler in getattr(logger, "handlers", ()):
                if (
                    isinstance(handler, logging.StreamHandler)
                    and not isinstance(handler, logging.FileHandler)
                    and _same_terminal(handler.stream, terminal)
                ):
                    original = handler.setStream(_AboveBar(bar, handler.stream))
                    self._handlers.append((handler, original))
        self._stdout: TextIO | None = None
        self._stderr: TextIO | None = None
        if _same_terminal(sys.stdout, terminal):
            self._stdout = sys.stdout
            sys.stdout = cast(TextIO, _AboveBar(bar, self._stdout))
        if _same_terminal(sys.stderr, terminal):
            self._stderr = sys.stderr
            sys.stderr = cast(TextIO, _AboveBar(bar, self._stderr))

    def restore(self) -> None:
        for handler, original in self._handlers:
            proxy = handler.setStream(original)
            if isinstance(proxy, _AboveBar):
                proxy.flush()
        if self._stdout is not None:
            sys.stdout.flush()
            sys.stdout, self._stdout = self._stdout, None
        if self._stderr is not None:
            sys.stderr.flush()
            sys.stderr, self._stderr = self._stderr, None


class _RichProgress(Progress):
    def __init__(self, total: int, done: int, description: str, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        console = Console(file=stream)
        self._bar: Any = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,  # _Routed does it, for the streams on this terminal only
            redirect_stderr=False,
        )
        self._task = self._bar.add_task(description, total=total, completed=done)
        self._routed = _Routed(self._bar, stream)
        self._bar.start()

    def update(self, done: int) -> None:
        # Drawn before the next line printed above the bar, or by the bar's own refresh (10/s).
        self._bar.update(self._task, completed=done)

    def close(self) -> None:
        self._bar.stop()
        self._routed.restore()


def make_progress(total: int, done: int, description: str = "training") -> Progress:
    """A rich bar when stderr is a terminal and rich is installed, else a silent one.

    >>> make_progress(10, 0).update(5)  # not a terminal under doctest: silent
    """
    stream = sys.stderr
    if not stream.isatty():
        return Progress()
    try:
        return _RichProgress(total, done, description, stream)
    except ImportError:
        return Progress()
