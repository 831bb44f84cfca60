"""Registration of experiments in Hydra's ConfigStore."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["register_experiment"]


def register_experiment(name: str, node: Any, *, group: str = "experiment") -> None:
    """Register an experiment (dataclass instance or dict) as ``+experiment=name``.

    Experiments are global packages: their keys sit at the config's top level, exactly as
    a YAML file ``conf/experiment/<name>.yaml`` with ``# @package _global_`` would. A
    dataclass is stored as its plain values, so it merges into any root config whose schema
    has the same keys (a subclass of the experiment's class, say).

    Examples
    --------
    >>> from detflow import ExperimentConfig
    >>> register_experiment("tiny", ExperimentConfig(name="tiny",
    ...     hyperparameters={"global_batch_size": 8}))
    """
    from hydra.core.config_store import ConfigStore

    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        node = dataclasses.asdict(node)  # its values; the root config's schema checks them
    ConfigStore.instance().store(group=group, name=name, node=node, package="_global_")
