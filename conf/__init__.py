"""The example's configs, written in Python; YAML ones sit in ``conf/experiment/``.

``register()`` puts the root config (``config``) and the Python experiments in Hydra's
ConfigStore, so ``python train.py +experiment=digits_mlp`` finds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from detflow import ExperimentConfig, SearcherConfig, register_experiment, scaled

__all__ = ["RootConfig", "TrainConfig", "register"]


@dataclass
class TrainConfig(ExperimentConfig):
    """The example's root config: detflow's keys plus which example trial to build."""

    trial: str = "quadratic"  # digits | quadratic


@dataclass
class RootConfig(TrainConfig):
    """The primary config ``config``: :class:`TrainConfig` plus Hydra's defaults list."""

    defaults: list[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"override hydra/sweeper": "detflow"},  # -m runs detflow's search
            {"override hydra/launcher": "detflow_local"},  # trials as local processes
        ]
    )


def digits_mlp() -> TrainConfig:
    """An MLP on the digits data, lr scaled linearly with the batch size."""
    return TrainConfig(
        name="digits_mlp",
        trial="digits",
        hyperparameters={
            "global_batch_size": 32,
            "base_batch_size": 32,
            "lr": scaled(0.1, "linear"),
            "hidden": 128,
        },
        searcher=SearcherConfig(name="single", metric="validation_loss", max_length="5 epochs"),
    )


def digits_asha() -> TrainConfig:
    """ASHA over lr, hidden width and batch size for the digits MLP."""
    cfg = digits_mlp()
    cfg.name = "digits_asha"
    cfg.searcher = SearcherConfig(
        name="asha",
        metric="validation_loss",
        max_length="8 epochs",
        max_trials=16,
        max_concurrent_trials=2,
        divisor=4,
        max_rungs=3,
        space={
            "hyperparameters.lr": "tag(log, interval(0.01, 1.0))",
            "hyperparameters.hidden": "choice(32, 64, 128, 256)",
            "hyperparameters.global_batch_size": "choice(16, 32, 64)",
        },
    )
    return cfg


def quadratic() -> TrainConfig:
    """The dependency-free noisy quadratic: fast trials for tests and search."""
    return TrainConfig(
        name="quadratic",
        trial="quadratic",
        hyperparameters={
            "global_batch_size": 8,
            "base_batch_size": 8,
            "lr": scaled(0.05, "linear"),
        },
        searcher=SearcherConfig(name="single", metric="validation_loss", max_length="4 epochs"),
    )


def register() -> None:
    """Register the root config and the Python experiments (safe to call again)."""
    ConfigStore.instance().store(name="config", node=RootConfig)
    for make in (digits_mlp, digits_asha, quadratic):
        register_experiment(make.__name__, make())
