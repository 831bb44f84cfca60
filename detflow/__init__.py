"""detflow: one training script from a laptop to a Slurm GPU cluster, on top of Hydra.

Python-first experiment configs, exact length units, one hyperparameter merge with
provenance, batch-size scaling, search and launchers.
"""

from __future__ import annotations

from detflow._config import HparamRecord, LoadedConfig, load_config
from detflow._errors import ConfigError
from detflow._experiment import Experiment, SearcherSettings
from detflow._init import init, main
from detflow._merge import HparamLayers, MergedHparams, Precedence, Source, merge_hparams
from detflow._resolvers import register_resolvers
from detflow._run import FitResult, Run, TrialError
from detflow._scale import ScaleRule, apply_rule, scale_factor, scaled
from detflow._schema import ExperimentConfig, OptimizationsConfig, ResourcesConfig, SearcherConfig
from detflow._store import register_experiment
from detflow._trial import Trial
from detflow._units import BatchMath, Length, Unit, parse_length

__all__ = [
    "BatchMath",
    "ConfigError",
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
