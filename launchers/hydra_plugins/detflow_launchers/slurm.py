"""``hydra/launcher=detflow_slurm``: trials as Slurm jobs (see detflow._launch.slurm)."""

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.detflow_launchers._configs import DetflowSlurmConf
from hydra_plugins.detflow_launchers._delegating import DelegatingLauncher

ConfigStore.instance().store(
    group="hydra/launcher", name="detflow_slurm", node=DetflowSlurmConf, provider="detflow"
)


class DetflowSlurmLauncher(DelegatingLauncher):
    """Submits jobs with submitit; non-blocking ``start``/``wait`` for detflow's sweeper."""

    def __init__(self, **settings: Any) -> None:
        from detflow._launch.slurm import SlurmTrials, settings_from

        self._impl = SlurmTrials(settings_from(settings))
        self.dry_run = self._impl.dry_run

    def sbatch_scripts(self, jobs: Any) -> list[str]:
        scripts: list[str] = self._impl.sbatch_scripts(jobs)
        return scripts
