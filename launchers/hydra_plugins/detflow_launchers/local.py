"""``hydra/launcher=detflow_local``: trials as local processes (see detflow._launch.local)."""

from collections.abc import Sequence

from hydra.core.config_store import ConfigStore
from hydra_plugins.detflow_launchers._configs import DetflowLocalConf
from hydra_plugins.detflow_launchers._delegating import DelegatingLauncher

ConfigStore.instance().store(
    group="hydra/launcher", name="detflow_local", node=DetflowLocalConf, provider="detflow"
)


class DetflowLocalLauncher(DelegatingLauncher):
    """Runs each job in its own local process; non-blocking ``start``/``wait`` for sweeps."""

    def __init__(
        self,
        max_parallel: int = 0,
        gpus: Sequence[int] = (),
        gpus_per_trial: int = 0,
        start_method: str = "fork_server",
        preload: Sequence[str] = (),
    ) -> None:
        from detflow._launch.local import LocalProcesses

        self._impl = LocalProcesses(
            max_parallel, list(gpus), gpus_per_trial, start_method, list(preload)
        )
