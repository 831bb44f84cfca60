"""A validated, typed view of a resolved experiment config.

Every config error is found here, before any training or submission starts, and reads as
one line naming the key, the bad value and what is accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detflow._core.counts import MAX_INT, check_count
from detflow._core.errors import ConfigError
from detflow._core.keys import check_known_keys
from detflow._core.merge import Precedence
from detflow._core.schema import (
    RUNG_DEFAULTS,
    CheckpointStorageConfig,
    ExperimentConfig,
    RungDefaults,
    SearcherConfig,
)
from detflow._core.text import shown
from detflow._core.tracking import DEFAULT_TRACKING, Tracking, parse_tracking
from detflow._core.units import BatchMath, Length, parse_length

__all__ = [
    "ADAPTIVE_MODES",
    "MAX_RESTARTS",
    "SAMPLERS",
    "SEARCHER_ALIASES",
    "SEARCHER_NAMES",
    "CheckpointPolicy",
    "Experiment",
    "PbtSettings",
    "SearcherSettings",
    "rung_defaults",
]

#: Trials a sweep may plan: each is checked before any starts, and its state kept.
MAX_TRIALS = 100_000
#: The most rungs ASHA may have: with divisor >= 2 the lowest is then max_length / 2**63,
#: less than any count; more would only make ever-larger numbers (10**6 rungs: a hang).
MAX_RUNGS = 64
#: The most restarts ``max_restarts`` may allow a trial (each one is a process started again).
MAX_RESTARTS = 1000
_SEARCHER = SearcherConfig()  # the schema is the one table of defaults
_EXPERIMENT = ExperimentConfig()
_STORAGE = CheckpointStorageConfig()

SEARCHER_NAMES = ("single", "grid", "random", "asha", "adaptive_asha", "bohb", "pbt")
#: Determined's older searcher names -> the detflow searcher that does what they did.
SEARCHER_ALIASES = {
    "adaptive": "adaptive_asha",
    "adaptive_simple": "adaptive_asha",
    "async_halving": "asha",
}
#: ``searcher.mode`` of adaptive_asha (Determined's): how many brackets, how aggressive.
ADAPTIVE_MODES = ("aggressive", "standard", "conservative")
#: ``searcher.sampler`` of asha and adaptive_asha: how a new trial's hyperparameters are drawn.
SAMPLERS = ("random", "tpe")


def rung_defaults(name: str) -> RungDefaults:
    """``searcher.divisor`` / ``max_rungs`` / ``sampler`` of searcher ``name`` (or an older name
    of it) when not given; Determined's (4, 5, random) for a searcher without rungs.

    >>> rung_defaults("asha"), rung_defaults("async_halving") == rung_defaults("asha")
    (RungDefaults(divisor=3, max_rungs=4, sampler='random'), True)
    >>> rung_defaults("adaptive_asha").sampler
    'tpe'
    """
    return RUNG_DEFAULTS.get(SEARCHER_ALIASES.get(name, name), _NO_RUNGS)


_NO_RUNGS = RungDefaults(divisor=4, max_rungs=5)
_MISSING = object()


@dataclass(frozen=True)
class PbtSettings:
    """``searcher.*`` of ``pbt``: the population, its generations' length (in
    ``searcher.max_length``'s unit) and how it exploits and explores (checked in range by
    the searcher)."""

    population_size: int
    perturb_every: Length
    truncation_fraction: float = _SEARCHER.truncation_fraction
    resample_probability: float = _SEARCHER.resample_probability
    perturb_factor: float = _SEARCHER.perturb_factor


@dataclass(frozen=True)
class SearcherSettings:
    """``searcher`` after validation."""

    name: str
    metric: str
    smaller_is_better: bool
    max_length: Length
    max_trials: int
    max_concurrent_trials: int
    divisor: int
    max_rungs: int
    space: dict[str, Any]
    mode: str = _SEARCHER.mode
    bracket_rungs: tuple[int, ...] = ()
    #: pbt's population and generations (None for the other searchers)
    pbt: PbtSettings | None = None
    #: the bottom rung of asha, adaptive_asha and bohb (None: from max_rungs)
    min_length: Length | None = None
    sampler: str = _NO_RUNGS.sampler
    random_fraction: float = _SEARCHER.random_fraction


@dataclass(frozen=True)
class CheckpointPolicy:
    """``checkpoint_storage`` after validation: how many checkpoints a trial keeps, and where.

    >>> CheckpointPolicy().while_training
    (1, 1)
    >>> CheckpointPolicy(save_trial_latest=0, save_trial_best=0).while_training
    (1, 0)
    """

    save_trial_latest: int = _STORAGE.save_trial_latest
    save_trial_best: int = _STORAGE.save_trial_best
    #: keep checkpoints only in the best N trials of a sweep; None: in every trial
    save_experiment_best: int | None = _STORAGE.save_experiment_best
    #: an absolute directory for the checkpoints (the run directory links to them); None: the
    #: run directory's own ``checkpoints/``
    storage_path: str | None = _STORAGE.storage_path

    @property
    def while_training(self) -> tuple[int, int]:
        """(latest, best) a run keeps while it may still go on: its latest always (a resume,
        a promotion or a restart starts from it)."""
        return max(1, self.save_trial_latest), self.save_trial_best


@dataclass(frozen=True)
class Experiment:
    """An experiment config whose every value has been checked.

    Examples
    --------
    >>> exp = Experiment.from_mapping({
    ...     "hyperparameters": {"global_batch_size": 32},
    ...     "searcher": {"max_length": "600 records"},
    ... })
    >>> exp.searcher.max_length
    Length(value=600, unit=<Unit.RECORDS: 'records'>)
    >>> exp.batch_math(batches_per_epoch=None).to_batches(exp.searcher.max_length)
    19
    """

    name: str
    seed: int
    resume: bool
    hparams_precedence: Precedence
    hyperparameters: dict[str, Any]
    searcher: SearcherSettings
    records_per_epoch: int | None
    min_validation_period: Length
    min_checkpoint_period: Length
    scheduling_unit: int
    aggregation_frequency: int
    slots_per_trial: int
    max_restarts: int = _EXPERIMENT.max_restarts
    perform_initial_validation: bool = _EXPERIMENT.perform_initial_validation
    checkpoint_storage: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    tracking: tuple[Tracking, ...] = DEFAULT_TRACKING
    notices: tuple[str, ...] = field(default=(), compare=False)

    @property
    def global_batch_size(self) -> int:
        """``hyperparameters.global_batch_size``, validated."""
        value = self.hyperparameters["global_batch_size"]
        assert isinstance(value, int)
        return value

    @property
    def per_slot_batch_size(self) -> int:
        """Records each slot (process) takes from one global batch."""
        return self.global_batch_size // self.slots_per_trial

    def batch_math(self, batches_per_epoch: int | None) -> BatchMath:
        """The length converter: epochs from ``records_per_epoch``, else from the data."""
        if self.records_per_epoch is not None:
            return BatchMath.from_records_per_epoch(
                self.global_batch_size, self.aggregation_frequency, self.records_per_epoch
            )
        return BatchMath(self.global_batch_size, self.aggregation_frequency, batches_per_epoch)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> Experiment:
        """Validate a resolved config; raise :class:`ConfigError` on the first bad value."""
        notices: list[str] = []
        check_known_keys(cfg)
        searcher_cfg = _section(cfg, "searcher")
        name = _get(searcher_cfg, "searcher.name", _SEARCHER.name)
        if isinstance(name, str) and name in SEARCHER_ALIASES:
            notices.append(
                f"searcher.name {name} is Determined's older name: running {SEARCHER_ALIASES[name]}"
            )
            name = SEARCHER_ALIASES[name]
        if name not in SEARCHER_NAMES:
            raise ConfigError("searcher.name", name, f"one of {', '.join(SEARCHER_NAMES)}")
        space = _get(searcher_cfg, "searcher.space", {})
        if not isinstance(space, Mapping):
            raise ConfigError("searcher.space", space, "a mapping of dotted keys to sweep values")
        max_length = _length(searcher_cfg, "searcher.max_length", _SEARCHER.max_length, notices)
        searcher = SearcherSettings(
            name=name,
            metric=_string(searcher_cfg, "searcher.metric", _SEARCHER.metric),
            smaller_is_better=_boolean(
                searcher_cfg, "searcher.smaller_is_better", _SEARCHER.smaller_is_better
            ),
            max_length=max_length,
            max_trials=_max_trials(searcher_cfg, name),
            max_concurrent_trials=_positive(
                searcher_cfg, "searcher.max_concurrent_trials", _SEARCHER.max_concurrent_trials
            ),
            divisor=_positive(
                searcher_cfg, "searcher.divisor", rung_defaults(name).divisor, minimum=2
            ),
            max_rungs=_positive(
                searcher_cfg, "searcher.max_rungs", rung_defaults(name).max_rungs, maximum=MAX_RUNGS
            ),
            space=dict(space),
            mode=_choice(searcher_cfg, "searcher.mode", _SEARCHER.mode, ADAPTIVE_MODES),
            bracket_rungs=_bracket_rungs(searcher_cfg),
            pbt=_pbt(searcher_cfg, max_length, notices) if name == "pbt" else None,
            min_length=_min_length(searcher_cfg, max_length, notices),
            sampler=_choice(
                searcher_cfg, "searcher.sampler", rung_defaults(name).sampler, SAMPLERS
            ),
            random_fraction=_fraction(
                searcher_cfg, "searcher.random_fraction", _SEARCHER.random_fraction
            ),
        )
        hparams = _get(cfg, "hyperparameters", _MISSING)
        if hparams is _MISSING or not isinstance(hparams, Mapping):
            raise ConfigError(
                "hyperparameters",
                None if hparams is _MISSING else hparams,
                "a mapping that gives at least global_batch_size",
            )
        hparams = dict(hparams)
        gbs = _positive(hparams, "hyperparameters.global_batch_size", _MISSING)
        slots = _positive(
            _section(cfg, "resources"),
            "resources.slots_per_trial",
            _EXPERIMENT.resources.slots_per_trial,
        )
        if gbs % slots:
            raise ConfigError(
                "hyperparameters.global_batch_size",
                gbs,
                f"a multiple of resources.slots_per_trial ({slots}): equal shares per slot",
            )
        if "base_batch_size" in hparams:
            _positive(hparams, "hyperparameters.base_batch_size", _MISSING)
        records_per_epoch = _get(cfg, "records_per_epoch", None)
        if records_per_epoch is not None:
            records_per_epoch = _positive(cfg, "records_per_epoch", None)
        return cls(
            name=_string(cfg, "name", _EXPERIMENT.name),
            seed=_integer(cfg, "seed", _EXPERIMENT.seed),
            resume=_boolean(cfg, "resume", _EXPERIMENT.resume),
            hparams_precedence=Precedence.parse(
                _get(cfg, "hparams_precedence", _EXPERIMENT.hparams_precedence)
            ),
            hyperparameters=hparams,
            searcher=searcher,
            records_per_epoch=records_per_epoch,
            min_validation_period=_length(
                cfg, "min_validation_period", _EXPERIMENT.min_validation_period, notices
            ),
            min_checkpoint_period=_length(
                cfg, "min_checkpoint_period", _EXPERIMENT.min_checkpoint_period, notices
            ),
            scheduling_unit=_positive(cfg, "scheduling_unit", _EXPERIMENT.scheduling_unit),
            aggregation_frequency=_positive(
                _section(cfg, "optimizations"),
                "optimizations.aggregation_frequency",
                _EXPERIMENT.optimizations.aggregation_frequency,
            ),
            slots_per_trial=slots,
            max_restarts=_count(cfg, "max_restarts", _EXPERIMENT.max_restarts, MAX_RESTARTS),
            perform_initial_validation=_boolean(
                cfg, "perform_initial_validation", _EXPERIMENT.perform_initial_validation
            ),
            checkpoint_storage=_checkpoint_policy(_section(cfg, "checkpoint_storage")),
            tracking=parse_tracking(_get(cfg, "tracking", [t.value for t in DEFAULT_TRACKING])),
            notices=tuple(notices),
        )


def _checkpoint_policy(storage: Mapping[str, Any]) -> CheckpointPolicy:
    """``checkpoint_storage``: counts of checkpoints to keep, and an absolute directory."""
    best = _get(storage, "checkpoint_storage.save_experiment_best", None)
    if best is not None:
        best = _count(storage, "checkpoint_storage.save_experiment_best", None)
    key = "checkpoint_storage.storage_path"
    path = _get(storage, key, None)
    if path is not None and (
        not isinstance(path, str)
        or not path.isprintable()
        or not os.path.isabs(path)
        or os.path.normpath(path) == os.sep
    ):
        raise ConfigError(
            key,
            shown(path),
            "null or an absolute directory path on one line, not / (a shared file system "
            "the trials reach, e.g. ${oc.env:SCRATCH}/checkpoints)",
        )
    return CheckpointPolicy(
        save_trial_latest=_count(
            storage, "checkpoint_storage.save_trial_latest", _STORAGE.save_trial_latest
        ),
        save_trial_best=_count(
            storage, "checkpoint_storage.save_trial_best", _STORAGE.save_trial_best
        ),
        save_experiment_best=best,
        storage_path=path,
    )


def _section(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = cfg.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "a mapping")
    return value


#: Searchers whose trial count is theirs to know: single runs one, grid one per point.
_COUNTED = ("single", "grid", "pbt")  # pbt: searcher.population_size


def _max_trials(searcher_cfg: Mapping[str, Any], name: str) -> int:
    """``searcher.max_trials``: required where the searcher samples (no silent 1 trial)."""
    if _get(searcher_cfg, "searcher.max_trials", None) is None:
        if name in _COUNTED:
            return 1
        raise ConfigError(
            "searcher.max_trials",
            None,
            f"a positive integer up to {MAX_TRIALS}: how many trials {name} search starts "
            "(it has no default)",
        )
    return _positive(searcher_cfg, "searcher.max_trials", None, maximum=MAX_TRIALS)


def _choice(cfg: Mapping[str, Any], key: str, default: str, accepted: tuple[str, ...]) -> str:
    value = _get(cfg, key, default)
    if value not in accepted:
        raise ConfigError(key, value, f"one of {', '.join(accepted)}")
    return str(value)


def _bracket_rungs(searcher_cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """``searcher.bracket_rungs``: adaptive_asha's rungs per bracket (empty: from ``mode``)."""
    key = "searcher.bracket_rungs"
    value = _get(searcher_cfg, key, [])
    expected = f"a list of at most {MAX_RUNGS} rung counts, each from 1 to {MAX_RUNGS}"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ConfigError(key, value, expected)
    rungs = tuple(value)
    if len(rungs) > MAX_RUNGS or not all(
        isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= MAX_RUNGS for r in rungs
    ):
        raise ConfigError(key, list(rungs), expected)
    return rungs


def _pbt(searcher_cfg: Mapping[str, Any], max_length: Length, notices: list[str]) -> PbtSettings:
    """``searcher.population_size`` and ``searcher.perturb_every`` (both required: no
    default population or generation fits every model) and pbt's other keys."""
    population = _positive(searcher_cfg, "searcher.population_size", _MISSING, maximum=MAX_TRIALS)
    every = _length(searcher_cfg, "searcher.perturb_every", _MISSING, notices)
    if every.unit is not max_length.unit:
        raise ConfigError(
            "searcher.perturb_every",
            str(every),
            f"a length in searcher.max_length's unit ({max_length.unit.value}), "
            f"e.g. '1 {max_length.unit.value}'",
        )
    numbers: dict[str, float] = {}
    for leaf in ("truncation_fraction", "resample_probability", "perturb_factor"):
        key = f"searcher.{leaf}"
        value = _get(searcher_cfg, key, getattr(_SEARCHER, leaf))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "a number")
        numbers[leaf] = float(value)
    return PbtSettings(population, every, **numbers)


def _min_length(
    searcher_cfg: Mapping[str, Any], max_length: Length, notices: list[str]
) -> Length | None:
    """``searcher.min_length``: null, or a length in ``max_length``'s unit up to it."""
    if _get(searcher_cfg, "searcher.min_length", None) is None:
        return None
    length = _length(searcher_cfg, "searcher.min_length", None, notices)
    unit = max_length.unit.value
    if length.unit is not max_length.unit or length.value > max_length.value:
        raise ConfigError(
            "searcher.min_length",
            str(length),
            f"null or a length in searcher.max_length's unit ({unit}) up to searcher.max_length "
            f"({max_length.value} {unit}), e.g. {{{unit}: 1}}",
        )
    return length


def _fraction(cfg: Mapping[str, Any], key: str, default: float) -> float:
    """A number from 0 to 1."""
    value = _get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(key, value, "a number from 0 to 1")
    return float(value)


def _get(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    leaf = key.rsplit(".", 1)[-1]
    if leaf not in cfg or (cfg[leaf] is None and default is not None):
        if default is _MISSING:
            raise ConfigError(key, None, "a value: it is required and missing")
        return default
    return cfg[leaf]


def _integer(cfg: Mapping[str, Any], key: str, default: Any) -> int:
    value = _get(cfg, key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not -MAX_INT - 1 <= value <= MAX_INT
    ):
        raise ConfigError(key, shown(value), f"an integer from {-MAX_INT - 1} to {MAX_INT}")
    return value


def _positive(
    cfg: Mapping[str, Any], key: str, default: Any, minimum: int = 1, maximum: int | None = None
) -> int:
    return check_count(key, _get(cfg, key, default), minimum, maximum or MAX_INT)


def _count(cfg: Mapping[str, Any], key: str, default: Any, maximum: int = MAX_INT) -> int:
    """An integer from 0 to ``maximum``."""
    expected = f"an integer from 0 to {maximum}"
    return check_count(key, _get(cfg, key, default), 0, maximum, expected=expected)


def _boolean(cfg: Mapping[str, Any], key: str, default: bool) -> bool:
    value = _get(cfg, key, default)
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def _string(cfg: Mapping[str, Any], key: str, default: str) -> str:
    value = _get(cfg, key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a non-empty string")
    return value


def _length(cfg: Mapping[str, Any], key: str, default: Any, notices: list[str]) -> Length:
    raw = _get(cfg, key, default)
    if isinstance(raw, Mapping) and len(raw) > 1:
        # Layers merged key by key: the unit given last is the one the user meant.
        unit, amount = list(raw.items())[-1]
        notices.append(f"{key} had {len(raw)} units {dict(raw)!r}; using the one given last")
        raw = {unit: amount}
    return parse_length(raw, key)
