"""The launchers' shared plugin class, in a module Hydra's plugin scanner does not re-execute.

Both plugins are thin: Hydra's ``Launcher`` interface plus detflow's non-blocking
``start``/``wait``, each handed to an implementation object from ``detflow``.
"""

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class DelegatingLauncher(Launcher):
    """A ``Launcher`` whose every call goes to ``self._impl`` (set by the subclass)."""

    _impl: Any

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        returns: Sequence[JobReturn] = self._impl.launch(job_overrides, initial_job_idx)
        return returns

    def start(self, trial_id: int, overrides: list[str]) -> None:
        """Start ``trial_id``'s job without waiting for it (detflow's sweeper)."""
        self._impl.start(trial_id, overrides)

    def wait(self) -> Any:
        """Block until at least one started job has ended; their outcomes."""
        return self._impl.wait()

    def request_stop(self) -> str | None:
        """Ctrl-C of the sweep: start nothing more, ask running jobs to checkpoint and end
        (or leave them running: the line that says so)."""
        notice: str | None = self._impl.request_stop()
        return notice

    def kill(self) -> None:
        """A second Ctrl-C: end the running jobs at once (where the launcher can)."""
        self._impl.kill()

    def left_running(self) -> list[str]:
        """What goes on running after the sweep stopped (Slurm job ids)."""
        left: list[str] = self._impl.left_running()
        return left
