"""The experiment config (design section 2) as dataclasses: Hydra structured configs.

Subclass :class:`ExperimentConfig` to add keys of your own; a plain dict with the same
keys works wherever an instance does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = [
    "CheckpointStorageConfig",
    "ExperimentConfig",
    "OptimizationsConfig",
    "ResourcesConfig",
    "SearcherConfig",
]

# OmegaConf reads these annotations at run time: keep typing.Optional / Any spellings.


@dataclass(frozen=True)
class RungDefaults:
    """``searcher.divisor``, ``searcher.max_rungs`` and ``searcher.sampler`` of one searcher
    when not given."""

    divisor: int
    max_rungs: int
    sampler: str = "random"


#: Each rung searcher's defaults, chosen on lcbench's learning curves (bench/README.md): asha's
#: bottom rung at max_length / 27 (Determined's divisor 4 and 5 rungs put it at / 256, where
#: a short rung can rank configurations against their final result), adaptive_asha's
#: brackets by thirds (capped as Determined caps them) and proposals from the density model
#: (as good on compute, better final regret, and no task where it ends worse than random
#: search), bohb asha's ladder (it tests its short rungs before it trusts them).
RUNG_DEFAULTS = {
    "asha": RungDefaults(divisor=3, max_rungs=4),
    "adaptive_asha": RungDefaults(divisor=3, max_rungs=5, sampler="tpe"),
    "bohb": RungDefaults(divisor=3, max_rungs=4, sampler="tpe"),
}


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
    divisor: Optional[int] = None  # noqa: UP045 - null: the searcher's (RUNG_DEFAULTS)
    max_rungs: Optional[int] = None  # noqa: UP045 - null: the searcher's (RUNG_DEFAULTS)
    mode: str = "standard"  # adaptive_asha: aggressive | standard | conservative
    bracket_rungs: list[int] = field(default_factory=list)  # adaptive_asha: rungs per bracket
    min_length: Any = None  # asha, adaptive_asha, bohb: the bottom rung (null: from max_rungs)
    sampler: Optional[str] = None  # noqa: UP045 - random | tpe; null: RUNG_DEFAULTS (bohb: tpe)
    random_fraction: float = 1 / 3  # tpe sampler, bohb: the share of proposals drawn at random
    population_size: Optional[int] = None  # noqa: UP045 - pbt: required (trials at once)
    perturb_every: Any = None  # pbt: a length (required) that divides max_length
    truncation_fraction: float = 0.25  # pbt: the bottom share replaced by top trials' children
    resample_probability: float = 0.25  # pbt: a choice is drawn again with this probability
    perturb_factor: float = 0.2  # pbt: numbers times 1 - or 1 + this
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
class CheckpointStorageConfig:
    """``checkpoint_storage``: which checkpoints are kept, and where (Determined's keys).

    While a trial trains, its latest checkpoint is always kept (a resume starts there), with
    the ``save_trial_latest`` latest and the ``save_trial_best`` best by ``searcher.metric``.
    Once it has ended in a sweep (no promotion or restart can come), only those are kept (0
    and 0: none); ``save_experiment_best`` (null: keep all) then keeps checkpoints only in
    the best N trials, ranked as the searcher ranks. ``storage_path`` (null: the run
    directory) is a shared directory outside the run directory: checkpoints go to a stable
    subdirectory of it, which the run directory's ``checkpoints`` links to.
    """

    save_trial_latest: int = 1
    save_trial_best: int = 1
    save_experiment_best: Optional[int] = None  # noqa: UP045
    storage_path: Optional[str] = None  # noqa: UP045


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
    #: times a trial that ended without a result (a signal, out of memory, a lost node) is
    #: started again from its last checkpoint
    max_restarts: int = 5
    #: one validation before the first batch (reported at batch 0), not repeated on resume
    perform_initial_validation: bool = False
    checkpoint_storage: CheckpointStorageConfig = field(default_factory=CheckpointStorageConfig)
    #: where reports go besides metrics.jsonl: tensorboard (event files), mlflow (a run per
    #: trial, to MLFLOW_TRACKING_URI)
    tracking: list[str] = field(default_factory=lambda: ["tensorboard"])
