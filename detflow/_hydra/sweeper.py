"""The Hydra side of ``hydra/sweeper=detflow``: space grammar, validation, launchers.

Imported lazily by the sweeper plugin; the search itself is :mod:`detflow._search.driver`.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn, Protocol, runtime_checkable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    Glob,
    IntervalSweep,
    Override,
    OverrideType,
    RangeSweep,
    Sweep,
)
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from detflow._core.artifacts import RESULTS_FILE, SEARCHER_KEYS_ENV, TARGET_LENGTH_ENV, TrialStatus
from detflow._core.errors import ConfigError, DetflowError, SweepFailed, config_error_in
from detflow._core.experiment import Experiment
from detflow._core.text import shown
from detflow._core.units import Length
from detflow._hydra.config import load_config
from detflow._search.driver import SweepDriver, SweepSummary, TrialLauncher, TrialOutcome
from detflow._search.searchers import Job, Searcher, make_searcher
from detflow._search.space import Choice, Dimension, Interval, Space

__all__ = [
    "BlockingLauncherAdapter",
    "PrintsScripts",
    "make_launcher",
    "parse_space",
    "refuse",
    "run_sweep",
]

log = logging.getLogger("detflow.sweep")
_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")


@runtime_checkable
class PrintsScripts(Protocol):
    """A launcher that can show what it would submit (``hydra.launcher.dry_run=true``)."""

    dry_run: bool

    def sbatch_scripts(self, jobs: Sequence[tuple[int, list[str]]]) -> list[str]:
        """The job scripts of these (trial id, overrides) pairs; nothing is submitted."""


def refuse(error: DetflowError) -> NoReturn:
    """End the sweep: ``Error: <one line>`` on stderr, the error's exit status, as
    :func:`detflow.main` does for a single run; the traceback with ``HYDRA_FULL_ERROR=1``.

    (Hydra would print a hint line after the error; a :class:`SystemExit` passes through
    Hydra's error reporting untouched.)
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"Error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(error.exit_code)


def make_launcher(
    hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
) -> Launcher:
    """The configured launcher, made and set up; a bad ``hydra.launcher.*`` option is refused
    in one line by :func:`refuse` (not Hydra's two-line "Error in call to target ...")."""
    from hydra.core.plugins import Plugins

    try:
        return Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
    except Exception as exc:
        error = config_error_in(exc)  # Hydra wraps it in an InstantiationException
        if error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        refuse(error)


def parse_space(entries: Mapping[str, Any]) -> Space:
    """Dimensions from Hydra's sweep grammar: choice, range, interval, ``tag(log, ...)``.

    Anything else is a :class:`ConfigError` naming ``searcher.space.<key>``, in one line.

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
        name = f"searcher.space.{_key_text(key)}"
        try:
            raw = text if isinstance(text, str) else _render(text)
        except ValueError:  # an int of more digits than Python writes
            raise ConfigError(name, shown(text), _GRAMMAR) from None
        try:
            override = parser.parse_override(f"{key}={raw}")
        except Exception as exc:  # Hydra's parser raises its own error types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(name, shown(text), f"{_GRAMMAR} ({first})") from None
        if (
            override.key_or_group != str(key)
            or override.package is not None
            or override.type != OverrideType.CHANGE
        ):
            raise ConfigError(name, shown(text), "a dotted config key such as hyperparameters.lr")
        space[key] = _dimension(override, name)
    return space


_GRAMMAR = "Hydra sweep grammar: choice(...), range(...), interval(a, b), tag(log, interval(a, b))"
#: The most values a choice or a range may have (a range of 10**12 would never end).
MAX_CHOICES = 10_000


def _key_text(key: Any) -> str:
    """``key`` as an error message names it: as written, or quoted if it would break the line."""
    text = str(key)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def _dimension(override: Override, key: str) -> Dimension:
    """The dimension a sweep override describes; a :class:`ConfigError` naming ``key`` if none."""
    value = override.value()
    text = override.get_value_string()
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None:
            raise ConfigError(key, text, "interval(low, high)")
        integer = all(isinstance(b, int) and not isinstance(b, bool) for b in (low, high))
        try:
            return Interval(_float(low), _float(high), log="log" in value.tags, integer=integer)
        except ConfigError as exc:
            raise ConfigError(key, f"interval({low}, {high})", exc.expected) from None
    if isinstance(value, (RangeSweep, ChoiceSweep)):
        if "log" in value.tags:
            raise ConfigError(key, text, "tag(log, ...) only on an interval")
        if value.shuffle:  # Hydra shuffles with the global RNG: another order on every run
            raise ConfigError(
                key, text, "no shuffle(...): a search space keeps its order (resume relies on it)"
            )
        return Choice(_values(override, key))
    if isinstance(value, (Glob, Sweep)):
        raise ConfigError(key, text, "values: glob(...) selects config group options only")
    return Choice((value,))


def _values(override: Override, key: str) -> tuple[Any, ...]:
    """The values of a choice or range sweep: at least one, at most :data:`MAX_CHOICES`."""
    value = override.value()
    text = override.get_value_string()
    if isinstance(value, RangeSweep):
        bounds = (value.start, value.stop, value.step)
        if not all(
            isinstance(b, int) or (isinstance(b, float) and math.isfinite(b)) for b in bounds
        ):
            raise ConfigError(key, text, "a range of finite numbers: range(start, stop, step)")
        if value.step == 0:
            raise ConfigError(key, text, "a range whose step is not 0")
    try:
        values = tuple(itertools.islice(override.sweep_iterator(), MAX_CHOICES + 1))
    except (ValueError, ArithmeticError, HydraException) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(key, text, f"{_GRAMMAR} ({first})") from None
    if len(values) > MAX_CHOICES:
        raise ConfigError(key, text, f"at most {MAX_CHOICES} values")
    if not values:
        raise ConfigError(key, text, "at least one value (a range's step must lead to its stop)")
    if any(isinstance(v, (Sweep, Glob)) for v in values):
        raise ConfigError(key, text, "plain values: a sweep inside a sweep has no meaning")
    return values


def _float(bound: Any) -> float:
    """``bound`` as a float; an int too large for one is an infinite bound (then refused)."""
    try:
        return float(bound)
    except OverflowError:
        return math.copysign(math.inf, bound)


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


class BlockingLauncherAdapter:
    """Any Hydra launcher as a :class:`TrialLauncher`, driven in waves: :meth:`wait`
    launches, with Hydra's blocking ``launch()``, every trial started since the last wave."""

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
        refuse(exc)
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

    if isinstance(launcher, PrintsScripts) and launcher.dry_run:
        return _dry_run(launcher, searcher, overrides_for, exp.searcher.max_concurrent_trials)
    trial_launcher = (
        launcher if isinstance(launcher, TrialLauncher) else BlockingLauncherAdapter(launcher)
    )
    driver = SweepDriver(
        searcher,
        trial_launcher,
        sweep_dir,
        overrides_for,
        exp.searcher.max_concurrent_trials,
        unit.value,
    )
    try:
        summary = driver.run()
    except ConfigError as exc:  # searcher.json or results.csv of another search; dir locked
        refuse(exc)
    _print_summary(summary, exp, sweep_dir)
    if summary.failed:
        results = sweep_dir / RESULTS_FILE
        refuse(
            SweepFailed(f"{summary.failed} of {len(summary.trials)} trials failed; see {results}")
        )
    return summary


def _dry_run(
    launcher: PrintsScripts, searcher: Searcher, overrides_for: Any, max_concurrent: int
) -> SweepSummary:
    """Print the scripts of the first trials to start; submit and record nothing."""
    jobs: list[tuple[int, list[str]]] = []
    while len(jobs) < max_concurrent and (job := searcher.ask()) is not None:
        jobs.append((job.trial_id, overrides_for(job)))
    scripts = launcher.sbatch_scripts(jobs)
    for script in scripts:
        print(script)
    log.info(
        "dry run: %d script(s) for the first %d trial(s) printed; nothing submitted",
        len(scripts),
        len(jobs),
    )
    return SweepSummary([], None, 0)


def _print_summary(summary: SweepSummary, exp: Experiment, sweep_dir: Path) -> None:
    log.info(
        "%d trials: %d completed, %d stopped early, %d failed; %d batches trained in all",
        len(summary.trials),
        summary.count(TrialStatus.COMPLETED),
        summary.count(TrialStatus.STOPPED_EARLY),
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
    log.info("results: %s", sweep_dir / RESULTS_FILE)
