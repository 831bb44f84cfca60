"""The Hydra side of ``hydra/sweeper=detflow``: space grammar, validation, launchers.

Imported lazily by the sweeper plugin; the search itself is :mod:`detflow._search.driver`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import os
import re
import shlex
import signal
import sys
import threading
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

from detflow._core.artifacts import (
    RESULTS_FILE,
    SEARCHER_KEYS_ENV,
    TARGET_LENGTH_ENV,
    TrialResult,
    TrialStatus,
)
from detflow._core.determined import (
    Hparam,
    find_dimensions,
    is_determined,
    parse_hparam,
    single_run_values,
)
from detflow._core.errors import ConfigError, DetflowError, SweepFailed, config_error_in
from detflow._core.experiment import Experiment
from detflow._core.paths import has_path, set_path
from detflow._core.text import number_text, shown
from detflow._core.units import BatchMath, Length, Unit
from detflow._harness import preemption
from detflow._hydra import detach
from detflow._hydra.config import load_config
from detflow._hydra.derive import compose_once
from detflow._search.driver import (
    LengthFormatter,
    SweepDriver,
    SweepInterrupted,
    SweepSummary,
    TrialLauncher,
    TrialOutcome,
    best_line,
    length_text,
)
from detflow._search.searchers import (
    AdaptiveAshaSearcher,
    AshaSearcher,
    BohbSearcher,
    Job,
    Searcher,
    make_searcher,
)
from detflow._search.space import Choice, Dimension, Interval, Space, from_determined

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
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def parse_space(entries: Mapping[str, Any], *, grid: bool = False) -> Space:
    """Dimensions from Hydra's sweep grammar: choice, range, interval, ``tag(log, ...)``;
    or from Determined's syntax (``{type: log, minval: -4, maxval: -1}``; ``grid``: a grid
    search takes its ``count`` points).

    Anything else is a :class:`ConfigError` naming ``searcher.space.<key>``, in one line.

    Examples
    --------
    >>> parse_space({"hyperparameters.lr": "tag(log, interval(1e-4, 1e-1))"})
    {'hyperparameters.lr': Interval(low=0.0001, high=0.1, log=True, integer=False)}
    >>> parse_space({"hyperparameters.bs": "choice(16, 32)"})
    {'hyperparameters.bs': Choice(values=(16, 32))}
    >>> parse_space({"hyperparameters.n": {"type": "int", "minval": 0, "maxval": 8, "count": 3}},
    ...             grid=True)
    {'hyperparameters.n': Choice(values=(0, 4, 8))}
    """
    parser = OverridesParser.create()
    space: Space = {}
    for key, text in entries.items():
        name = f"searcher.space.{_key_text(key)}"
        if is_determined(text):
            parsed = parse_hparam(name, text)
            space[key] = (
                from_determined(name, parsed, grid=grid)
                if isinstance(parsed, Hparam)
                else Choice(parsed)
            )
            continue
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
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if isinstance(value, Mapping):
        for key in value:
            if not (isinstance(key, str) and _KEY.match(key)):
                raise ValueError(f"a mapping key Hydra's grammar cannot write: {key!r}")
        return "{" + ",".join(f"{k}:{_render(v)}" for k, v in value.items()) + "}"
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
    # Determined-syntax entries of ``hyperparameters`` are dimensions of the space; the
    # experiment is validated with each at its midpoint (a trial gets the searcher's value).
    hparams = base.get("hyperparameters")
    determined = find_dimensions(hparams) if isinstance(hparams, Mapping) else {}
    planning = base
    if determined:
        assert isinstance(hparams, Mapping)
        planning = {**base, "hyperparameters": single_run_values(hparams)[0]}
    experiment = load_config(planning, overrides=fixed, searcher_keys=[]).experiment
    grid = experiment.searcher.name == "grid"
    space: Space = {key: from_determined(key, hp, grid=grid) for key, hp in determined.items()}
    space.update(parse_space(experiment.searcher.space, grid=grid))
    for override in overrides:
        if override.is_sweep_override():
            space[override.key_or_group] = _dimension(override, override.key_or_group)
    for key, dim in space.items():
        if isinstance(dim, Choice):
            _check_writable(parser, key, dim.values)
    return _Plan(experiment, space, fixed, base)


def _check_writable(parser: OverridesParser, key: str, values: Sequence[Any]) -> None:
    """Every list or mapping among a choice's values reads back from its override unchanged
    (a trial gets its value through one): else a :class:`ConfigError` naming ``key``."""
    for value in values:
        if not isinstance(value, (list, tuple, Mapping)):
            continue
        try:
            back = parser.parse_override(f"{key}={_render(value)}").value()
        except Exception:  # _render's ValueError, or Hydra's parser's own errors
            back = None
        if back != (list(value) if isinstance(value, tuple) else value):
            raise ConfigError(
                key,
                shown(value),
                "values Hydra's override grammar writes back unchanged (mapping keys: names)",
            )


def _validate_points(plan: _Plan, searcher: Searcher) -> int:
    """Load every planned point's config the cheap way (no Hydra composition), then the
    first point with each dimension at each of its extreme values (:func:`_extremes`): a
    searcher's model (``sampler: tpe``, bohb) may propose a value no planned point has."""
    points = searcher.planned_hparams()
    for trial_id, point in enumerate(points):
        try:
            _load_point(plan, point)
        except ConfigError as exc:
            raise ConfigError(
                exc.key, exc.value, f"{exc.expected} (trial {trial_id} of the search: {point})"
            ) from None
    if not points:
        return 0
    for key, dim in plan.space.items():
        for value, what in _extremes(dim):
            if key in points[0] and points[0][key] == value:
                continue  # that very config was loaded above
            try:
                _load_point(plan, {**points[0], key: value})
            except ConfigError as exc:
                where = f"{key} = {shown(value)}, {what} of the search space"
                raise ConfigError(exc.key, exc.value, f"{exc.expected} ({where})") from None
    return len(points)


def _load_point(plan: _Plan, point: Mapping[str, Any]) -> None:
    """Load the experiment with ``point``'s values set: a :class:`ConfigError` if invalid."""
    cfg = copy.deepcopy(plan.base)
    for key, value in point.items():
        set_path(cfg, key, value)
    load_config(
        cfg,
        overrides=plan.fixed,
        searcher_keys=list(point),
        declared=plan.base.get("hyperparameters"),
    )


def _extremes(dim: Dimension) -> list[tuple[Any, str]]:
    """The values of ``dim`` validated before a sweep, each with what it is: every value of a
    choice, both ends of an interval (whole numbers for an integer one).

    >>> _extremes(Interval(0.5, 4.5, integer=True))
    [(1, 'the low end of an interval'), (4, 'the high end of an interval')]
    """
    if isinstance(dim, Choice):
        return [(value, "a value of a choice") for value in dim.values]
    low: float | int = math.ceil(dim.low) if dim.integer else dim.low
    high: float | int = math.floor(dim.high) if dim.integer else dim.high
    return [(low, "the low end of an interval"), (high, "the high end of an interval")]


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
        mode=settings.mode,
        bracket_rungs=settings.bracket_rungs,
        max_concurrent_trials=settings.max_concurrent_trials,
        steps_of=steps_of,
        pbt=settings.pbt,
        min_length=None if settings.min_length is None else settings.min_length.value,
        sampler=settings.sampler,
        random_fraction=settings.random_fraction,
    )


#: Hyperparameters that change a trial's batch geometry, and the experiment's field of each.
_GEOMETRY_KEYS = {
    "hyperparameters.global_batch_size": "global_batch_size",
    "optimizations.aggregation_frequency": "aggregation_frequency",
    "records_per_epoch": "records_per_epoch",
}


def _geometry(exp: Experiment, hparams: Mapping[str, Any]) -> BatchMath | None:
    """The batch geometry of a job: the experiment's, with any swept batch size in ``hparams``."""
    values = {field: hparams.get(key, getattr(exp, field)) for key, field in _GEOMETRY_KEYS.items()}
    gbs, agg, records = (values[f] for f in _GEOMETRY_KEYS.values())
    try:
        if records is not None:
            return BatchMath.from_records_per_epoch(gbs, agg, records)
        return BatchMath(gbs, agg)
    except (ConfigError, TypeError):  # validated per point before; nothing to add to a line
        return None


def _length_formatter(exp: Experiment) -> LengthFormatter:
    """How a job's target reads in the sweep's lines: whole batches at the job's own batch
    size, the searcher's unit beside them (``41 batches (0.25 epochs)``); the unit alone
    when the data's length, known only to the trial, decides the batches."""
    unit = exp.searcher.max_length.unit

    def text(length: Fraction, hparams: Mapping[str, Any]) -> str:
        geometry = _geometry(exp, hparams)
        try:
            batches = geometry.to_batches(Length(length, unit)) if geometry else None
        except ConfigError:  # epochs without records_per_epoch
            batches = None
        return length_text(batches, length, unit.value)

    return text


class BlockingLauncherAdapter:
    """Any Hydra launcher as a :class:`TrialLauncher`, driven in waves: :meth:`wait`
    launches, with Hydra's blocking ``launch()``, every trial started since the last wave."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        self.queued: list[tuple[int, list[str]]] = []
        compose_once(launcher)  # hydra/launcher=basic: each job's config derived, not composed

    def start(self, trial_id: int, overrides: list[str]) -> None:
        self.queued.append((trial_id, overrides))

    def request_stop(self) -> None:
        """Ctrl-C: the next wave is not launched (a wave running goes on to its end)."""
        self.queued = []

    def wait(self) -> list[TrialOutcome]:
        wave, self.queued = self.queued, []
        if not wave:  # a stopped sweep (Ctrl-C) dropped them: nothing runs
            return []
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
    length_of = _length_formatter(exp)
    _log_plan(plan, searcher, n_points, length_of, sweep_dir)

    def overrides_for(job: Job) -> list[str]:
        # ``++``: set the key whether or not the experiment already has it. A list or a
        # mapping would be merged into what is there (a Determined entry): delete, then add.
        chosen: list[str] = []
        for key, value in job.hparams.items():
            if isinstance(value, (list, tuple, Mapping)) and has_path(plan.base, key):
                chosen += [f"~{key}", f"+{key}={_render(value)}"]
            else:
                chosen.append(f"++{key}={_render(value)}")
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
    try:  # hydra.sweeper.detach=true: the driver goes to a Slurm job of its own (detach.py)
        detached = detach.before_search(
            config,
            sweep_dir,
            n_points,
            exp.searcher.max_concurrent_trials,
            f"hydra.sweep.dir={_render(str(sweep_dir.absolute()))}",
        )
    except ConfigError as exc:
        refuse(exc)
    if detached is not None:
        return SweepSummary([], None, 0)
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
        length_text=length_of,
        max_restarts=exp.max_restarts,
        checkpoints=exp.checkpoint_storage,
    )
    try:
        with _CtrlC(driver, trial_launcher):
            summary = driver.run()
    except ConfigError as exc:  # searcher.json or results.csv of another search; dir locked
        refuse(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C: the state is saved (or as last saved)
        _interrupted(exc, launcher, sweep_dir)
    _print_summary(summary, exp, sweep_dir, searcher.keys)
    if summary.failed:
        results = sweep_dir / RESULTS_FILE
        refuse(
            SweepFailed(f"{summary.failed} of {len(summary.trials)} trials failed; see {results}")
        )
    return summary


class _CtrlC:
    """SIGINT while the search runs (Ctrl-C: the terminal sends it to the whole process group;
    detflow's trial processes ignore it). The first asks the running trials to checkpoint at
    their next step and end, as ``SIGUSR2`` does (:meth:`SweepDriver.request_stop`, the
    launcher's ``request_stop``): the driver records what ends, saves the state and raises
    :class:`SweepInterrupted`. The second raises ``KeyboardInterrupt`` at once: the state on
    disk is the last saved one, which is consistent (as after a crash). The handler only sets
    flags (and writes one line): the driver and the launcher act on them in their own loop.
    """

    def __init__(self, driver: SweepDriver, launcher: TrialLauncher) -> None:
        self.driver = driver
        self.launcher = launcher
        self.count = 0
        self.previous: Any = None

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        self.driver.request_stop()
        stop = getattr(self.launcher, "request_stop", None)
        notice = stop() if callable(stop) else None
        preemption.request_stop()  # a launcher that runs its trials in this process
        if not isinstance(notice, str):
            notice = "stopping: the running trials checkpoint at their next step and end"
        with contextlib.suppress(OSError):  # os.write: no reentrant call into sys.stderr
            os.write(2, f"{notice} (Ctrl-C again to stop at once)\n".encode())


def _interrupted(exc: KeyboardInterrupt, launcher: Launcher, sweep_dir: Path) -> NoReturn:
    """The sweep's last line after Ctrl-C, and exit status 130 (128 + SIGINT).

    After the first Ctrl-C the trials have ended (checkpointed): what is left of the
    launcher (the fork server) is ended. After the second, the running trials are killed.
    Slurm jobs are left running either way: the line says so, and how to cancel them.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # one more Ctrl-C must not cut this short
    kill = getattr(launcher, "kill", None)
    if callable(kill):
        kill()
    left = getattr(launcher, "left_running", None)
    running: list[str] = list(left()) if callable(left) else []
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    # The same directory, named: a sweep in Hydra's default dir (a time stamp) would else
    # start over in a new one.
    again = f"run the same command with {shlex.quote(f'hydra.sweep.dir={sweep_dir.absolute()}')}"
    if running:
        jobs = " ".join(running)
        line = (
            f"interrupted: the sweep stopped; its Slurm jobs {jobs} keep running (scancel "
            f"{jobs} to stop them); once they end, {again} to resume (state saved there)"
        )
    elif isinstance(exc, SweepInterrupted):
        count = len(exc.stopped)
        line = (
            f"interrupted: {count} trial{'' if count == 1 else 's'} checkpointed and stopped; "
            f"to resume, {again} (state saved there)"
        )
    else:  # the second Ctrl-C, perhaps in a save: its temporary file goes, the old file stays
        for tmp in sweep_dir.glob(f".*.tmp-{os.getpid()}"):
            tmp.unlink(missing_ok=True)
        line = (
            "interrupted: stopped at once, running trials killed; to resume from their last "
            f"checkpoints, {again} (its state is as last saved)"
        )
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(130)


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


def _log_plan(
    plan: _Plan, searcher: Searcher, n_points: int, length_of: LengthFormatter, sweep_dir: Path
) -> None:
    """The sweep's first line: what will run, how long, where; then what the plan says of
    the config (a Determined name mapped, a length of two units) and its warnings."""
    exp = plan.experiment
    unit = exp.searcher.max_length.unit.value
    swept_geometry = any(key in plan.space for key in _GEOMETRY_KEYS)  # batches differ per trial
    top = searcher.max_length
    longest = length_text(None, top, unit) if swept_geometry else length_of(top, {})
    geometry = None if swept_geometry else _geometry(exp, {})
    rungs = ""
    if isinstance(searcher, AdaptiveAshaSearcher):
        brackets = [
            f"{b.max_trials} trial{'' if b.max_trials == 1 else 's'} ({b.max_concurrent_trials} "
            f"at once) at {_rungs_text(searcher.bracket_rung_lengths(i), unit, geometry)}"
            for i, b in enumerate(searcher.brackets)
        ]
        rungs = f", {len(brackets)} bracket{'' if len(brackets) == 1 else 's'}: " + "; ".join(
            brackets
        )
    elif len(searcher.rung_lengths) > 1:
        rungs = f", rungs at {_rungs_text(searcher.rung_lengths, unit, geometry)}"
    is_tpe = isinstance(searcher, AshaSearcher) and searcher.sampler == "tpe"
    if is_tpe and not isinstance(searcher, BohbSearcher):  # bohb's own lines say more
        rungs += ", new trials proposed by a density model (searcher.sampler=tpe)"
    log.info(
        "%s search: %d trial%s planned, up to %d at once, max_length %s%s, in %s",
        exp.searcher.name,
        n_points,
        "" if n_points == 1 else "s",
        exp.searcher.max_concurrent_trials,
        longest,
        rungs,
        sweep_dir,
    )
    for notice in exp.notices:
        log.info("%s", notice)
    for warning in searcher.warnings():
        log.warning("%s", warning)


def _rungs_text(lengths: Sequence[Fraction], unit: str, geometry: BatchMath | None) -> str:
    """Rung lengths in whole batches (the searcher's unit beside them when it is another);
    in the unit alone when the batches are not known before the trials run.

    >>> _rungs_text([Fraction(1, 4), Fraction(1)], "epochs", BatchMath(8, 1, 32))
    '8, 32 batches (0.25, 1 epochs)'
    >>> _rungs_text([Fraction(1, 4), Fraction(1)], "epochs", None)
    '0.25, 1 epochs'
    """
    given = f"{', '.join(number_text(r) for r in lengths)} {unit}"
    if geometry is None:
        return given
    try:
        batches = [geometry.to_batches(Length(r, Unit(unit))) for r in lengths]
    except ConfigError:  # epochs, and the data's length decides the batches
        return given
    counted = f"{', '.join(str(b) for b in batches)} batches"
    return counted if unit == "batches" else f"{counted} ({given})"


def _print_summary(
    summary: SweepSummary, exp: Experiment, sweep_dir: Path, order: Sequence[str]
) -> None:
    restarts = sum(summary.restarts.values())
    log.info(
        "%d trials: %d completed, %d stopped early, %d failed; %d batches trained in all%s",
        len(summary.trials),
        summary.count(TrialStatus.COMPLETED),
        summary.count(TrialStatus.STOPPED_EARLY),
        summary.failed,
        summary.batches_trained,
        f"; {restarts} restart{'' if restarts == 1 else 's'} (max_restarts)" if restarts else "",
    )
    best = summary.best
    if best is not None:  # the same line as ``detflow summary``'s
        result = TrialResult.read(sweep_dir / str(best.trial_id))
        log.info(
            "%s",
            best_line(
                best.trial_id,
                best.hparams,
                exp.searcher.metric,
                best.best_metric,
                length_text(
                    result.batches if result else None,
                    best.length_trained,
                    exp.searcher.max_length.unit.value,
                ),
                order,
            ),
        )
    log.info("results: %s", sweep_dir / RESULTS_FILE)
