"""Registration of detflow's structured configs in Hydra's ConfigStore."""

from __future__ import annotations

from typing import Any

__all__ = ["register_experiment"]


def register_experiment(name: str, node: Any, *, group: str = "experiment") -> None:
    """Register an experiment (dataclass instance, class or dict) as ``+experiment=name``.

    Experiments are global packages: their keys sit at the config's top level, exactly as
    a YAML file ``conf/experiment/<name>.yaml`` with ``# @package _global_`` would.

    Examples
    --------
    >>> from detflow import ExperimentConfig
    >>> register_experiment("tiny", ExperimentConfig(name="tiny",
    ...     hyperparameters={"global_batch_size": 8}))
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=group, name=name, node=node, package="_global_")
