"""detflow: one training script from a laptop to a Slurm GPU cluster, on top of Hydra.

Python-first experiment configs, exact length units, one hyperparameter merge with
provenance, batch-size scaling and derived values, search and launchers.
"""

from __future__ import annotations

from detflow._core.artifacts import HparamRecord
from detflow._core.errors import ConfigError, DetflowError, TrialError
from detflow._core.experiment import Experiment, SearcherSettings
from detflow._core.expr import derived
from detflow._core.merge import HparamLayers, MergedHparams, Precedence, Source, merge_hparams
from detflow._core.scale import ScaleRule, apply_rule, scale_factor, scaled
from detflow._core.schema import (
    CheckpointStorageConfig,
    ExperimentConfig,
    OptimizationsConfig,
    ResourcesConfig,
    SearcherConfig,
)
from detflow._core.units import BatchMath, Length, Unit, parse_length
from detflow._harness.run import FitResult, Run
from detflow._harness.trial import Trial
from detflow._hydra.config import LoadedConfig, load_config
from detflow._hydra.init import init, main
from detflow._hydra.resolvers import register_resolvers
from detflow._hydra.store import register_experiment

__all__ = [
    "BatchMath",
    "CheckpointStorageConfig",
    "ConfigError",
    "DetflowError",
    "Experiment",
    "ExperimentConfig",
    "FitResult",
    "HparamLayers",
    "HparamRecord",
    "Length",
    "LoadedConfig",
    "MergedHparams",
    "OptimizationsConfig",
    "Precedence",
    "ResourcesConfig",
    "Run",
    "ScaleRule",
    "SearcherConfig",
    "SearcherSettings",
    "Source",
    "Trial",
    "TrialError",
    "Unit",
    "apply_rule",
    "derived",
    "init",
    "load_config",
    "main",
    "merge_hparams",
    "parse_length",
    "register_experiment",
    "scale_factor",
    "scaled",
]

__version__ = "0.1.0"

register_resolvers()
