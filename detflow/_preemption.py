"""Pre-emption: a signal asks every running :class:`~detflow.Run` to checkpoint and stop.

The handler only sets flags; the training loop stops at its next optimizer-step boundary,
so the checkpoint is exact. Launchers install it in trial processes (Slurm sends
``SIGUSR2`` before a time limit or a pre-emption, see ``signal_delay_s``).
"""

from __future__ import annotations

import signal
import weakref
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detflow._run import Run

__all__ = ["install_stop_handler", "request_stop", "stop_requested", "stopped"]

_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_flags = {"requested": False, "stopped": False}


def register(run: Run) -> None:
    """Track ``run`` (called by ``fit``); a stop already requested reaches it at once."""
    _runs.add(run)
    if _flags["requested"]:
        run.request_stop()


def note_stopped() -> None:
    """A run stopped early on request and saved a checkpoint (called by ``fit``)."""
    _flags["stopped"] = True


def request_stop(signum: int | None = None, frame: FrameType | None = None) -> None:
    """Ask every run in this process to checkpoint at its next step and stop."""
    _flags["requested"] = True
    for run in list(_runs):
        run.request_stop()


def stop_requested() -> bool:
    """Whether a stop was asked for in this process."""
    return _flags["requested"]


def stopped() -> bool:
    """Whether a run stopped early on request (so the job should be requeued)."""
    return _flags["stopped"]


def install_stop_handler(signum: int = signal.SIGUSR2) -> None:
    """Make ``signum`` request a stop (replacing, e.g., submitit's immediate exit)."""
    signal.signal(signum, request_stop)
