"""Keys detflow does not know: each named in one line, with the key meant or the detflow way.

detflow's own sections (every field of :class:`ExperimentConfig` that is a dataclass:
``searcher``, ``optimizations``, ``resources``, ``checkpoint_storage``) take exactly the
schema's keys; at the top level a key of the user's own (``trial``, ``data`` in a root
config of theirs) is fine, but a near miss of a schema key (``seeds``) or a key of
Determined's that detflow spells differently (``reproducibility``) is refused before any
work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

from detflow._core.errors import ConfigError
from detflow._core.schema import ExperimentConfig
from detflow._core.text import Verbatim

__all__ = ["DETERMINED_WAY", "UnknownKeys", "boolean_keys", "check_known_keys", "did_you_mean"]

#: Determined's keys that detflow spells differently or does elsewhere: key -> the detflow way.
DETERMINED_WAY: dict[str, str] = {
    # top-level keys no project of its own would have: refused wherever they appear
    "reproducibility": "seed (reproducibility.experiment_seed -> seed)",
    "entrypoint": "your training script: python train.py +experiment=NAME",
    "bind_mounts": "nothing: Slurm jobs see the cluster's shared file system",
    "profiling": "your own profiler in the trial",
    "pbs": "hydra/launcher=detflow_slurm (detflow launches on Slurm)",
    # keys inside a section: refused as such (a top-level ``environment`` may be the user's)
    "reproducibility.experiment_seed": "seed",
    "environment.image": "hydra.launcher.setup (lines run before the trial: modules, venvs)",
    "environment.environment_variables": "hydra.launcher.setup (export lines)",
    "slurm.sbatch_args": "hydra.launcher.additional_parameters",
    "slurm.slots_per_node": "hydra.launcher.gpus_per_node",
    "slurm.gpu_type": "hydra.launcher.constraint",
    "resources.slots": "resources.slots_per_trial",
    "resources.resource_pool": "hydra.launcher.partition",
    "resources.priority": "hydra.launcher.qos",
    "searcher.max_steps": "searcher.max_length: N steps",
    "searcher.budget": "searcher.max_length and searcher.max_trials",
    "searcher.max_time": "searcher.max_length",
    "searcher.time_metric": "searcher.max_length in records, batches, steps or epochs",
    "searcher.source_trial_id": "resume=true in the trial's run directory",
    "searcher.source_checkpoint_uuid": "resume=true in the trial's run directory",
    "searcher.stop_once": "searcher.name=asha (promotion-based)",
    "checkpoint_storage.type": "checkpoint_storage.storage_path (a shared file system path)",
    "checkpoint_storage.host_path": "checkpoint_storage.storage_path",
    "checkpoint_storage.container_path": "checkpoint_storage.storage_path",
}


class UnknownKeys(ConfigError):
    """Keys detflow does not know, all named in one line.

    >>> print(UnknownKeys({"searcher.max_trial": "did you mean searcher.max_trials?"}))
    unknown key searcher.max_trial (did you mean searcher.max_trials?)
    """

    def __init__(self, hints: Mapping[str, str]) -> None:
        self.hints = dict(hints)
        parts = [f"{key} ({hint})" if hint else key for key, hint in self.hints.items()]
        super().__init__(", ".join(self.hints), Verbatim("unknown"), "; ".join(parts))
        plural = "s" if len(self.hints) > 1 else ""
        self.line = f"unknown key{plural} {', '.join(parts)}"

    def __str__(self) -> str:
        return self.line

    def __reduce__(self) -> tuple[type[UnknownKeys], tuple[dict[str, str]]]:  # type: ignore[override]
        return (type(self), (self.hints,))


def did_you_mean(key: str, known: list[str], prefix: str = "") -> str:
    """``did you mean X?`` for the nearest known key, else the list of known keys.

    >>> did_you_mean("max_trial", ["max_trials", "metric"], "searcher.")
    'did you mean searcher.max_trials?'
    """
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if close:
        return f"did you mean {prefix}{close[0]}?"
    return f"{prefix.rstrip('.') or 'the top level'} takes {', '.join(sorted(known))}"


def _fields(schema: type[Any]) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(schema)}


def _section_schemas() -> dict[str, type[Any]]:
    """detflow's own sections, from the schema: each field of :class:`ExperimentConfig`
    whose type is a dataclass (a new section is known here the moment the schema has it).

    >>> sorted(_section_schemas())
    ['checkpoint_storage', 'optimizations', 'resources', 'searcher']
    """
    hints = typing.get_type_hints(ExperimentConfig)
    return {
        spec.name: hints[spec.name]
        for spec in dataclasses.fields(ExperimentConfig)
        if isinstance(hints[spec.name], type) and dataclasses.is_dataclass(hints[spec.name])
    }


def check_known_keys(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`UnknownKeys` naming every key detflow does not know in ``cfg``.

    >>> check_known_keys({"seed": 1, "trial": "mlp", "searcher": {"max_trials": 2}})
    >>> check_known_keys({"reproducibility": {"experiment_seed": 42},
    ...                   "searcher": {"max_trial": 5}})
    Traceback (most recent call last):
    ...
    detflow._core.keys.UnknownKeys: unknown keys reproducibility.experiment_seed (Determined's \
key: use seed), searcher.max_trial (did you mean searcher.max_trials?)
    """
    top = list(_fields(ExperimentConfig))
    unknown: dict[str, str] = {}
    for key, value in cfg.items():
        name = str(key)
        if name in top:
            continue
        nested = {
            f"{name}.{k}": DETERMINED_WAY[f"{name}.{k}"]
            for k in (value if isinstance(value, Mapping) else {})
            if f"{name}.{k}" in DETERMINED_WAY
        }
        if nested:
            unknown.update({k: f"Determined's key: use {way}" for k, way in nested.items()})
        elif name in DETERMINED_WAY:
            unknown[name] = f"Determined's key: use {DETERMINED_WAY[name]}"
        elif difflib.get_close_matches(name, top, n=1, cutoff=0.8):
            unknown[name] = did_you_mean(name, top)
    for section, schema in _section_schemas().items():
        values = cfg.get(section)
        if not isinstance(values, Mapping):
            continue
        known = list(_fields(schema))
        for key in values:
            name = f"{section}.{key}"
            if str(key) in known:
                continue
            way = DETERMINED_WAY.get(name)
            unknown[name] = (
                f"Determined's key: use {way}"
                if way
                else did_you_mean(str(key), known, f"{section}.")
            )
    if unknown:
        raise UnknownKeys(unknown)


def boolean_keys(schema: type[Any] = ExperimentConfig, prefix: str = "") -> list[str]:
    """The schema's dotted keys that take true or false, and nothing else.

    >>> boolean_keys()
    ['perform_initial_validation', 'resume', 'searcher.smaller_is_better']
    """
    found: list[str] = []
    hints = typing.get_type_hints(schema)
    for spec in dataclasses.fields(schema):
        kind = hints[spec.name]
        if kind is bool:
            found.append(prefix + spec.name)
        elif dataclasses.is_dataclass(kind) and isinstance(kind, type):
            found += boolean_keys(kind, f"{prefix}{spec.name}.")
    return sorted(found)
