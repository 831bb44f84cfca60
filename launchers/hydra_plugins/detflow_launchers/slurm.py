"""``hydra/launcher=detflow_slurm``: trials as Slurm jobs (see detflow._slurm_launcher)."""

from collections.abc import Sequence
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.detflow_launchers._configs import DetflowSlurmConf
from omegaconf import DictConfig

ConfigStore.instance().store(
    group="hydra/launcher", name="detflow_slurm", node=DetflowSlurmConf, provider="detflow"
)


class DetflowSlurmLauncher(Launcher):
    """Submits jobs with submitit; non-blocking ``start``/``wait`` for detflow's sweeper."""

    def __init__(self, **settings: Any) -> None:
        from detflow._slurm_launcher import SlurmTrials, settings_from

        self._impl = SlurmTrials(settings_from(settings))
        self.dry_run = self._impl.dry_run

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        return self._impl.launch(job_overrides, initial_job_idx)

    def start(self, trial_id: int, overrides: list[str]) -> None:
        self._impl.start(trial_id, overrides)

    def wait(self) -> Any:
        return self._impl.wait()

    def sbatch_scripts(self, jobs: Any) -> list[str]:
        return self._impl.sbatch_scripts(jobs)
