"""What detflow's launchers share: composing a trial's job, its private files, and Hydra's
blocking ``launch()`` built on the non-blocking ``start``/``wait`` the sweeper uses."""

from __future__ import annotations

import os
import stat
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from detflow._hydra.derive import TrialComposer
from detflow._search.driver import TrialOutcome

__all__ = ["TrialProcesses", "private_directory", "script_directory"]


class _HasTrialId(Protocol):
    trial_id: int


_Job = TypeVar("_Job", bound=_HasTrialId)


def private_directory(path: Path) -> Path:
    """``path``, created if need be, readable and writable by its owner only (0700).

    The launchers keep there what their trial processes unpickle (the sweep's Hydra context,
    each job's config, each result): another user who could write there could run code as
    this one. A directory owned by someone else, or a symbolic link, is refused.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory but a link or a file: remove it")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user (uid {info.st_uid}): remove it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def slots_per_trial(config: DictConfig) -> int:
    """The trial's ``resources.slots_per_trial``: its processes (1 when not given)."""
    return int(OmegaConf.select(config, "resources.slots_per_trial", default=1) or 1)


def script_directory() -> str:
    """Where the training script is: a trial process imports the task's modules from there,
    as this process did (the first entry of ``PYTHONPATH`` a trial gets)."""
    return sys.path[0]


class TrialProcesses(ABC, Generic[_Job]):
    """A launcher's implementation: Hydra's ``setup``/``launch`` and the sweeper's
    non-blocking ``start``/``wait``, over a subclass's jobs.

    A subclass says how a job starts (:meth:`start`), which ended (:meth:`_poll`), and what
    its outcome is (:meth:`_outcome`, :meth:`_job_return`).
    """

    #: How often :meth:`wait` and :meth:`launch` look for jobs that ended.
    poll_seconds: ClassVar[float] = 0.05

    def __init__(self) -> None:
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None
        self.composer: TrialComposer | None = None
        self._stop_requested = False

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.composer = TrialComposer(hydra_context.config_loader, config)

    # -- what a subclass provides -------------------------------------------------------------
    @abstractmethod
    def start(self, trial_id: int, overrides: list[str]) -> None:
        """Start (or queue) ``trial_id``'s job with these Hydra overrides."""

    @abstractmethod
    def _poll(self) -> list[_Job]:
        """The jobs that ended since the last call (without blocking)."""

    @abstractmethod
    def _busy(self) -> bool:
        """Whether any job is still queued or running."""

    @abstractmethod
    def _outcome(self, job: _Job) -> TrialOutcome:
        """The ended job as the sweep driver sees it."""

    @abstractmethod
    def _job_return(self, job: _Job) -> JobReturn:
        """The ended job as Hydra sees it."""

    def _flush(self) -> None:
        """Send what :meth:`start` queued (Slurm submits arrays); nothing by default."""

    # -- Ctrl-C of the sweep (see detflow._hydra.sweeper.run_sweep) ------------------------------
    def request_stop(self) -> str | None:
        """The sweep stops: start (or submit) nothing more; a subclass also asks its running
        jobs to checkpoint and end, or leaves them running (:meth:`left_running`) and returns
        the line that says so. Safe in a signal handler: it sets a flag that the next
        :meth:`wait` acts on."""
        self._stop_requested = True
        return None

    def kill(self) -> None:
        """End the running jobs at once, where this launcher can; by default it cannot."""
        self._stop_requested = True

    def left_running(self) -> list[str]:
        """What goes on running after the sweep has stopped (Slurm job ids); none here."""
        return []

    # -- built on them ------------------------------------------------------------------------
    def compose(self, trial_id: int, overrides: Sequence[str]) -> tuple[DictConfig, Path]:
        """The job's config (with its job id and number) and its run directory.

        Composed once per sweep and derived per trial (:class:`TrialComposer`): equal to
        Hydra's ``load_sweep_config``, in a few milliseconds."""
        assert self.composer is not None
        config = self.composer.compose(list(overrides))
        with open_dict(config):
            config.hydra.job.id = str(trial_id)
            config.hydra.job.num = trial_id
        return config, Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)

    def private_dir(self) -> Path:
        """The sweep's owner-only directory for what trial processes unpickle."""
        assert self.config is not None
        return private_directory(Path(str(self.config.hydra.sweep.dir)) / ".detflow")

    def wait(self) -> list[TrialOutcome]:
        """Block until at least one job has ended; return every one that has."""
        self._flush()
        while True:
            ended = self._poll()
            if ended or not self._busy():
                return [self._outcome(job) for job in ended]
            time.sleep(self.poll_seconds)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        """Hydra's blocking interface: run every job and return Hydra's ``JobReturn``s."""
        ids = [initial_job_idx + i for i in range(len(job_overrides))]
        for trial_id, overrides in zip(ids, job_overrides, strict=True):
            self.start(trial_id, list(overrides))
        self._flush()
        returns: dict[int, JobReturn] = {}
        while len(returns) < len(ids):
            ended = self._poll()
            for job in ended:
                returns[job.trial_id] = self._job_return(job)
            if not ended:
                time.sleep(self.poll_seconds)
        return [returns[i] for i in ids]
