"""``hydra/launcher=detflow_local``: trials as local processes (see detflow._local_launcher)."""

from collections.abc import Sequence
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.detflow_launchers._configs import DetflowLocalConf
from omegaconf import DictConfig

ConfigStore.instance().store(
    group="hydra/launcher", name="detflow_local", node=DetflowLocalConf, provider="detflow"
)


class DetflowLocalLauncher(Launcher):
    """Runs each job in its own local process; non-blocking ``start``/``wait`` for sweeps."""

    def __init__(
        self,
        max_parallel: int = 0,
        gpus: Sequence[int] = (),
        gpus_per_trial: int = 0,
        start_method: str = "fork_server",
    ) -> None:
        from detflow._local_launcher import LocalProcesses

        self._impl = LocalProcesses(max_parallel, list(gpus), gpus_per_trial, start_method)

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
