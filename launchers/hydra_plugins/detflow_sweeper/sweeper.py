"""``hydra/sweeper=detflow``: single, grid, random and ASHA search (a shim)."""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.detflow_sweeper._config import DetflowSweeperConf
from omegaconf import DictConfig

ConfigStore.instance().store(
    group="hydra/sweeper", name="detflow", node=DetflowSweeperConf, provider="detflow"
)


class DetflowSweeper(Sweeper):
    """Searches with the experiment's ``searcher`` settings through the configured launcher."""

    def __init__(self, detach: bool = False, driver: Any = None) -> None:
        # hydra.sweeper.detach / .driver: read from the config by detflow._hydra.detach
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from detflow._hydra.sweeper import make_launcher

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = make_launcher(hydra_context, task_function, config)

    def sweep(self, arguments: list[str]) -> Any:
        from detflow._hydra.sweeper import run_sweep

        assert self.config is not None and self.launcher is not None
        return run_sweep(self.config, self.launcher, arguments)
