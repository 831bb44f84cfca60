"""Pre-emption: a signal asks every running run to checkpoint and stop.

The handler only sets flags; the training loop stops at its next optimizer-step boundary,
so the checkpoint is exact. Launchers install it in trial processes (Slurm sends
``SIGUSR2`` before a time limit or a pre-emption, see ``signal_delay_s``). In a single run
:func:`interrupt_requests_stop` makes Ctrl-C (``SIGINT``) a stop request too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from types import FrameType
from typing import Protocol

__all__ = [
    "Stoppable",
    "install_stop_handler",
    "interrupt_requests_stop",
    "interrupted",
    "note_stopped",
    "register",
    "request_stop",
    "stopped",
]


class Stoppable(Protocol):
    """What a stop request reaches: a run that checkpoints at its next step and returns."""

    def request_stop(self) -> None: ...


_runs: weakref.WeakSet[Stoppable] = weakref.WeakSet()
_flags = {"requested": False, "stopped": False, "interrupted": False}


def register(run: Stoppable) -> None:
    """Track ``run`` (called as it starts training); a stop already requested reaches it."""
    _runs.add(run)
    if _flags["requested"]:
        run.request_stop()


def note_stopped() -> None:
    """A run stopped early on request and saved a checkpoint."""
    _flags["stopped"] = True


def request_stop(signum: int | None = None, frame: FrameType | None = None) -> None:
    """Ask every run in this process to checkpoint at its next step and stop."""
    _flags["requested"] = True
    for run in list(_runs):
        run.request_stop()


def stopped() -> bool:
    """Whether a run stopped early on request (so the job should be requeued)."""
    return _flags["stopped"]


def install_stop_handler(signum: int = signal.SIGUSR2) -> None:
    """Make ``signum`` request a stop (replacing, e.g., submitit's immediate exit), then
    unblock it: a Slurm job starts with it blocked (:mod:`detflow._launch.slurm`), so that one
    sent while the job was still starting waits here, and is a stop request now."""
    signal.signal(signum, request_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})


def interrupted() -> bool:
    """Whether Ctrl-C asked for the stop (under :func:`interrupt_requests_stop`)."""
    return _flags["interrupted"]


@contextlib.contextmanager
def interrupt_requests_stop(notice: str = "") -> Iterator[None]:
    """Within: the first ``SIGINT`` (Ctrl-C) asks every run to checkpoint at its next step
    and stop, as :func:`request_stop` does, and writes ``notice`` (one line) to stderr; a
    second raises ``KeyboardInterrupt`` at once. The previous handler is restored on the way
    out. Only in the main thread (elsewhere signals cannot be handled): a no-op there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        if count > 1:
            raise KeyboardInterrupt
        _flags["interrupted"] = True
        request_stop()
        if notice:
            with contextlib.suppress(OSError):  # os.write: no reentrant call into sys.stderr
                os.write(2, notice.encode() + b"\n")

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
