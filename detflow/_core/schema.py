"""The experiment config (design section 2) as dataclasses: Hydra structured configs.

Subclass :class:`ExperimentConfig` to add keys of your own; a plain dict with the same
keys works wherever an instance does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = [
    "ExperimentConfig",
    "OptimizationsConfig",
    "ResourcesConfig",
    "SearcherConfig",
]

# OmegaConf reads these annotations at run time: keep typing.Optional / Any spellings.


@dataclass
class SearcherConfig:
    """``searcher``: what to train for, how long, and how to search.

    ``max_length`` is ``"<positive int> <unit>"`` or ``{unit: int}`` with unit one of
    records, batches, steps, epochs. ``space`` maps dotted keys to Hydra's sweep grammar,
    e.g. ``{"hyperparameters.lr": "tag(log, interval(1e-4, 1e-1))"}``.
    """

    name: str = "single"
    metric: str = "validation_loss"
    smaller_is_better: bool = True
    max_length: Any = "1 epochs"
    max_trials: Optional[int] = None  # noqa: UP045 - single: 1; grid: its points; random, asha: required
    max_concurrent_trials: int = 1
    divisor: int = 4
    max_rungs: int = 5
    mode: str = "standard"  # adaptive_asha: aggressive | standard | conservative
    bracket_rungs: list[int] = field(default_factory=list)  # adaptive_asha: rungs per bracket
    space: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizationsConfig:
    """``optimizations``: ``aggregation_frequency`` is batches per optimizer step."""

    aggregation_frequency: int = 1


@dataclass
class ResourcesConfig:
    """``resources``: ``slots_per_trial`` is processes (GPUs) per trial."""

    slots_per_trial: int = 1


@dataclass
class ExperimentConfig:
    """The experiment config of design section 2.

    Examples
    --------
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(ExperimentConfig(hyperparameters={"global_batch_size": 32}))
    >>> cfg.searcher.max_length
    '1 epochs'
    """

    name: str = "experiment"
    seed: int = 0
    resume: bool = False
    hparams_precedence: str = "code"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    searcher: SearcherConfig = field(default_factory=SearcherConfig)
    records_per_epoch: Optional[int] = None  # noqa: UP045 (OmegaConf needs Optional on 3.10)
    min_validation_period: Any = "1 epochs"
    min_checkpoint_period: Any = "1 epochs"
    scheduling_unit: int = 100
    optimizations: OptimizationsConfig = field(default_factory=OptimizationsConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
