"""The Hydra side of ``hydra/sweeper=detflow``: space grammar, validation, launchers.

Imported lazily by the sweeper plugin; the search itself is :mod:`detflow._sweep`.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf

from detflow._config import SEARCHER_KEYS_ENV, load_config
from detflow._errors import ConfigError
from detflow._experiment import Experiment
from detflow._init import TARGET_LENGTH_ENV
from detflow._search import Job, Searcher, make_searcher
from detflow._space import Choice, Dimension, Interval, Space
from detflow._sweep import SweepDriver, SweepSummary, TrialLauncher, TrialOutcome
from detflow._units import Length

__all__ = ["SweepFailed", "parse_space", "run_sweep"]

log = logging.getLogger("detflow.sweep")
_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")


class SweepFailed(CompactHydraException):
    """Some trials failed: the sweep ends with a non-zero exit status and this one line."""


class SweepRefused(CompactHydraException):
    """A config error found before any trial started: one line, nothing launched."""


def parse_space(entries: Mapping[str, Any]) -> Space:
    """Dimensions from Hydra's sweep grammar: choice, range, interval, ``tag(log, ...)``.

    Examples
    --------
    >>> parse_space({"hyperparameters.lr": "tag(log, interval(1e-4, 1e-1))"})
    {'hyperparameters.lr': Interval(low=0.0001, high=0.1, log=True, integer=False)}
    >>> parse_space({"hyperparameters.bs": "choice(16, 32)"})
    {'hyperparameters.bs': Choice(values=(16, 32))}
    """
    parser = OverridesParser.create()
    space: Space = {}
    for key, text in entries.items():
        raw = text if isinstance(text, str) else _render(text)
        try:
            override = parser.parse_override(f"{key}={raw}")
        except Exception as exc:  # Hydra's parser raises its own error types
            raise ConfigError(
                f"searcher.space.{key}",
                text,
                "Hydra sweep grammar: choice(...), range(...), interval(a, b), "
                f"tag(log, interval(a, b)) ({str(exc).splitlines()[0]})",
            ) from None
        space[key] = _dimension(override, f"searcher.space.{key}")
    return space


def _dimension(override: Override, key: str) -> Dimension:
    value = override.value()
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        assert low is not None and high is not None
        integer = isinstance(low, int) and isinstance(high, int)
        try:
            return Interval(float(low), float(high), log="log" in value.tags, integer=integer)
        except ConfigError as exc:
            raise ConfigError(key, f"interval({low}, {high})", exc.expected) from None
    if isinstance(value, RangeSweep):
        return Choice(tuple(override.sweep_iterator()))
    if isinstance(value, ChoiceSweep):
        if "log" in value.tags:
            raise ConfigError(key, override.input_line, "tag(log, ...) only on an interval")
        return Choice(tuple(override.sweep_iterator()))
    return Choice((value,))


def _render(value: Any) -> str:
    """A value written so Hydra's override parser reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _BARE.match(text) and text.lower() not in ("true", "false", "null", "nan", "inf"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class _Plan:
    experiment: Experiment
    space: Space
    fixed: list[str]
    base: dict[str, Any]


def _plan(config: DictConfig, arguments: Sequence[str]) -> _Plan:
    parser = OverridesParser.create()
    overrides = parser.parse_overrides(list(arguments))
    fixed = [str(o.input_line) for o in overrides if not o.is_sweep_override()]
    container = OmegaConf.to_container(config, resolve=False)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    base = {str(k): v for k, v in container.items()}
    experiment = load_config(base, overrides=fixed, searcher_keys=[]).experiment
    space = parse_space(experiment.searcher.space)
    for override in overrides:
        if override.is_sweep_override():
            space[override.key_or_group] = _dimension(override, override.key_or_group)
    return _Plan(experiment, space, fixed, base)


def _validate_points(plan: _Plan, searcher: Searcher) -> int:
    """Load every planned point's config the cheap way (no Hydra composition)."""
    points = searcher.planned_hparams()
    for trial_id, point in enumerate(points):
        cfg = copy.deepcopy(plan.base)
        for key, value in point.items():
            _set(cfg, key, value)
        try:
            load_config(cfg, overrides=plan.fixed, searcher_keys=list(point))
        except ConfigError as exc:
            raise ConfigError(
                exc.key, exc.value, f"{exc.expected} (trial {trial_id} of the search: {point})"
            ) from None
    return len(points)


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def _make_searcher(plan: _Plan) -> Searcher:
    exp = plan.experiment
    settings = exp.searcher
    unit = settings.max_length.unit
    steps_of = None
    if unit.value != "epochs" or exp.records_per_epoch is not None:
        math_ = exp.batch_math(None)

        def steps_of(length: Fraction) -> int:
            return math_.to_steps(Length(length, unit))

    return make_searcher(
        settings.name,
        space=plan.space,
        max_length=settings.max_length.value,
        max_trials=settings.max_trials,
        seed=exp.seed,
        metric=settings.metric,
        smaller_is_better=settings.smaller_is_better,
        divisor=settings.divisor,
        max_rungs=settings.max_rungs,
        steps_of=steps_of,
    )


class _Waves:
    """Any Hydra launcher, driven in waves: :meth:`wait` launches what was started."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        self.queued: list[tuple[int, list[str]]] = []

    def start(self, trial_id: int, overrides: list[str]) -> None:
        self.queued.append((trial_id, overrides))

    def wait(self) -> list[TrialOutcome]:
        wave, self.queued = self.queued, []
        returns = self.launcher.launch([o for _, o in wave], initial_job_idx=wave[0][0])
        return [outcome(trial_id, ret) for (trial_id, _), ret in zip(wave, returns, strict=True)]


def outcome(trial_id: int, ret: JobReturn, log_path: str | None = None) -> TrialOutcome:
    """A :class:`TrialOutcome` from Hydra's :class:`JobReturn`."""
    if ret.status == JobStatus.FAILED:
        exc = ret._return_value
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        return TrialOutcome(trial_id, f"{type(exc).__name__}: {lines[-1]}", log_path)
    return TrialOutcome(trial_id, None, log_path)


def run_sweep(config: DictConfig, launcher: Launcher, arguments: Sequence[str]) -> SweepSummary:
    """Plan, validate every point, then search; print the closing lines."""
    try:
        plan = _plan(config, arguments)
        searcher = _make_searcher(plan)
        n_points = _validate_points(plan, searcher)
    except ConfigError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SweepRefused(f"Error: {exc}") from None
    exp = plan.experiment
    unit = exp.searcher.max_length.unit
    sweep_dir = Path(str(config.hydra.sweep.dir))
    log.info(
        "%s search: %d trial(s) planned, up to %d at once, max_length %s, in %s",
        exp.searcher.name,
        n_points,
        exp.searcher.max_concurrent_trials,
        exp.searcher.max_length,
        sweep_dir,
    )

    def overrides_for(job: Job) -> list[str]:
        # ``++``: set the key whether or not the experiment already has it.
        chosen = [f"++{key}={_render(value)}" for key, value in job.hparams.items()]
        hparam_keys = ",".join(k for k in job.hparams if k.startswith("hyperparameters."))
        extra = [
            "++resume=true",
            f"hydra.sweep.subdir={job.trial_id}",
            f"++hydra.job.env_set.{SEARCHER_KEYS_ENV}={_render(hparam_keys)}",
        ]
        if job.length != searcher.max_length:
            extra.append(
                f"++hydra.job.env_set.{TARGET_LENGTH_ENV}={_render(f'{job.length} {unit.value}')}"
            )
        return [*plan.fixed, *chosen, *extra]

    if getattr(launcher, "dry_run", False):
        return _dry_run(launcher, searcher, overrides_for, exp.searcher.max_concurrent_trials)
    trial_launcher: TrialLauncher = launcher if _submits(launcher) else _Waves(launcher)  # type: ignore[assignment]
    driver = SweepDriver(
        searcher,
        trial_launcher,
        sweep_dir,
        overrides_for,
        exp.searcher.max_concurrent_trials,
        unit.value,
    )
    summary = driver.run()
    _print_summary(summary, exp, sweep_dir)
    if summary.failed:
        results = sweep_dir / "results.csv"
        raise SweepFailed(f"{summary.failed} of {len(summary.trials)} trials failed; see {results}")
    return summary


def _dry_run(
    launcher: Launcher, searcher: Searcher, overrides_for: Any, max_concurrent: int
) -> SweepSummary:
    """Print the scripts of the first trials to start; submit and record nothing."""
    jobs: list[tuple[int, list[str]]] = []
    while len(jobs) < max_concurrent and (job := searcher.ask()) is not None:
        jobs.append((job.trial_id, overrides_for(job)))
    scripts = launcher.sbatch_scripts(jobs)  # type: ignore[attr-defined]
    for script in scripts:
        print(script)
    log.info(
        "dry run: %d script(s) for the first %d trial(s) printed; nothing submitted",
        len(scripts),
        len(jobs),
    )
    return SweepSummary([], None, 0)


def _submits(launcher: Launcher) -> bool:
    return callable(getattr(launcher, "start", None)) and callable(getattr(launcher, "wait", None))


def _print_summary(summary: SweepSummary, exp: Experiment, sweep_dir: Path) -> None:
    log.info(
        "%d trials: %d completed, %d stopped early, %d failed; %d batches trained in all",
        len(summary.trials),
        summary.count("COMPLETED"),
        summary.count("STOPPED_EARLY"),
        summary.failed,
        summary.batches_trained,
    )
    best = summary.best
    if best is not None:
        chosen = " ".join(f"{k}={v}" for k, v in best.hparams.items())
        log.info(
            "best: trial %d, %s=%s (at its last rung) %s",
            best.trial_id,
            exp.searcher.metric,
            best.last_metric,
            chosen,
        )
    log.info("results: %s", sweep_dir / "results.csv")
