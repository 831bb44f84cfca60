"""Search algorithms with an ask/tell interface: single, grid, random and asynchronous ASHA.

Pure Python: nothing here knows of Hydra, OmegaConf or torch. A driver asks a
:class:`Searcher` for the next :class:`Job` whenever a worker is free, runs it, and tells the
searcher the result. Lengths are exact :class:`~fractions.Fraction` amounts of the searcher's
unit (``searcher.max_length``'s). The whole state is JSON, so a killed search resumes where
it stopped: :meth:`Searcher.in_flight` lists the jobs to relaunch.

Examples
--------
>>> from detflow._search.space import Choice
>>> searcher = GridSearcher({"lr": Choice((0.1, 0.2))}, max_length=5)
>>> while (job := searcher.ask()) is not None:
...     searcher.tell(job.trial_id, metric=job.hparams["lr"], length=job.length)
>>> searcher.done, searcher.best().hparams
(True, {'lr': 0.1})
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from detflow._core.artifacts import TrialStatus
from detflow._core.counts import check_count
from detflow._core.errors import ConfigError
from detflow._core.experiment import (
    MAX_RUNGS,
    SAMPLERS,
    SEARCHER_ALIASES,
    SEARCHER_NAMES,
    PbtSettings,
)
from detflow._core.schema import SearcherConfig
from detflow._core.text import shown
from detflow._search.rungs import RungLadder, rank_correlation
from detflow._search.space import Choice, Space, grid_points, sample
from detflow._search.tpe import DensityModel, TpeSettings, min_observations, propose

__all__ = [
    "MODE_BRACKETS",
    "AdaptiveAshaSearcher",
    "AshaSearcher",
    "BohbSearcher",
    "Bracket",
    "GridSearcher",
    "Job",
    "RandomSearcher",
    "RungTrust",
    "Searcher",
    "SingleSearcher",
    "TrialRecord",
    "adaptive_brackets",
    "asha_rungs",
    "bracket_concurrency",
    "bracket_trials",
    "make_searcher",
    "rank_key",
    "trial_status",
]

_DEFAULTS = SearcherConfig()  # the schema is the one table of defaults
_STATE_VERSION = 1


@dataclass(frozen=True)
class Job:
    """What :meth:`Searcher.ask` tells the driver to run.

    ``length`` is the cumulative target length; ``promotion`` means: continue ``trial_id``
    from its checkpoint up to ``length`` rather than starting a new trial.

    Examples
    --------
    >>> Job(trial_id=0, hparams={"lr": 0.1}, length=Fraction(1, 4), rung=0, promotion=False)
    Job(trial_id=0, hparams={'lr': 0.1}, length=Fraction(1, 4), rung=0, promotion=False)
    """

    trial_id: int
    hparams: dict[str, Any]
    length: Fraction
    rung: int
    promotion: bool


@dataclass(frozen=True)
class TrialRecord:
    """One trial as reported by :meth:`Searcher.trials`.

    ``status`` is one of RUNNING, PENDING (waiting below the top rung for a promotion that may
    still come), COMPLETED (finished the top rung), STOPPED_EARLY (below the top rung when the
    search ended) and FAILED. ``rung`` is the rung of the trial's latest job. ``best_metric``
    is the best ``searcher.metric`` at any of the trial's validations (what its best
    checkpoint holds, ``result.json``'s ``best_metric``); ``last_metric`` the one at the end of
    its furthest rung.

    Examples
    --------
    >>> TrialRecord(3, {}, TrialStatus.COMPLETED, Fraction(5), 0.25, 0.25, None, 0).status
    <TrialStatus.COMPLETED: 'COMPLETED'>
    """

    trial_id: int
    hparams: dict[str, Any]
    status: TrialStatus
    length_trained: Fraction
    best_metric: float | None
    last_metric: float | None
    error: str | None
    rung: int


@dataclass
class _Trial:
    """A searcher's own, mutable view of one trial."""

    trial_id: int
    hparams: dict[str, Any]
    rung: int = 0
    metrics: dict[int, float] = field(default_factory=dict)  # rung -> metric reported there
    length_trained: Fraction = Fraction(0)
    error: str | None = None
    best: float | None = None  # the best metric at any validation, as told


def rank_key(
    rung: int, best: float, trial_id: int, smaller_is_better: bool
) -> tuple[int, float, int]:
    """How trials rank, best first: the furthest rung reported, then the trial's best metric
    (the best ``searcher.metric`` at any of its validations), then the trial id. Ranking by
    rung first keeps a short trial's metric from beating a longer one's. The sweep's closing
    line and ``detflow summary`` rank with this same key.

    >>> sorted([(0, 0.1, 0), (1, 0.5, 1)], key=lambda t: rank_key(*t, smaller_is_better=True))
    [(1, 0.5, 1), (0, 0.1, 0)]
    """
    return (-rung, best if smaller_is_better else -best, trial_id)


def trial_status(*, in_flight: bool, failed: bool, top_rung: bool, done: bool) -> TrialStatus:
    """A trial's status from what the search state says of it (``detflow summary`` reads
    ``searcher.json`` with this same rule).

    >>> trial_status(in_flight=False, failed=False, top_rung=False, done=True)
    <TrialStatus.STOPPED_EARLY: 'STOPPED_EARLY'>
    """
    if in_flight:
        return TrialStatus.RUNNING
    if failed:
        return TrialStatus.FAILED
    if top_rung:
        return TrialStatus.COMPLETED
    return TrialStatus.STOPPED_EARLY if done else TrialStatus.PENDING


def _fraction_str(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def _check_length(value: int | Fraction) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | Fraction) or value <= 0:
        raise ConfigError("searcher.max_length", shown(value), "a positive length")
    return Fraction(value)


class Searcher(ABC):
    """Decides which trials run, with which hyperparameters, and how long.

    Subclasses say which hyperparameters a new trial gets (``_new_hparams``) and, for
    adaptive searchers, which trial to promote (``_promotion``); the bookkeeping is shared.

    Examples
    --------
    >>> searcher = SingleSearcher(max_length=10)
    >>> job = searcher.ask()
    >>> (job.trial_id, job.length, searcher.ask())
    (0, Fraction(10, 1), None)
    >>> searcher.tell(0, metric=0.5, length=job.length)
    >>> str(searcher.trials()[0].status), searcher.done
    ('COMPLETED', True)
    """

    def __init__(
        self,
        max_length: int | Fraction,
        *,
        metric: str = _DEFAULTS.metric,
        smaller_is_better: bool = True,
    ) -> None:
        self.metric = metric
        self.smaller_is_better = smaller_is_better
        self.max_length = _check_length(max_length)
        self.rung_lengths: tuple[Fraction, ...] = (self.max_length,)
        #: The swept keys in search order (the space's), saved for readers of the state.
        self.keys: tuple[str, ...] = ()
        self._trials: list[_Trial] = []
        self._in_flight: dict[int, Job] = {}  # in the order asked

    @abstractmethod
    def _new_hparams(self, trial_id: int) -> dict[str, Any] | None:
        """Hyperparameters of a new trial ``trial_id``, or None when no new trial may start."""

    def _promotion(self) -> int | None:
        """The trial to promote to its next rung now, if any."""
        return None

    def _settings(self) -> dict[str, Any]:
        """What must not change between saving a state and loading it."""
        return {
            "searcher": type(self).__name__,
            "smaller_is_better": self.smaller_is_better,
            "rung_lengths": [_fraction_str(length) for length in self.rung_lengths],
        }

    def _score(self, metric: float) -> float:
        """``metric`` made smaller-is-better."""
        return metric if self.smaller_is_better else -metric

    def _next_job(self) -> Job | None:
        trial_id = self._promotion()
        if trial_id is not None:
            trial = self._trials[trial_id]
            rung = trial.rung + 1
            return Job(trial_id, dict(trial.hparams), self.rung_lengths[rung], rung, True)
        trial_id = len(self._trials)
        hparams = self._new_hparams(trial_id)
        if hparams is None:
            return None
        start = self._new_trial_rung()
        return Job(trial_id, hparams, self.rung_lengths[start], start, False)

    def _new_trial_rung(self) -> int:
        """The rung a new trial starts at now."""
        return 0

    def _recorded(self, trial: _Trial, rung: int) -> None:
        """``trial``'s metric at ``rung`` was just recorded (a hook: nothing by default)."""
        return None

    def _reloaded(self) -> None:
        """The state was just loaded (a hook: nothing by default)."""
        return None

    def _start_rung(self, trial_id: int) -> int:
        """The rung trial ``trial_id`` started at (its first job is not a promotion)."""
        return 0

    def warnings(self) -> list[str]:
        """What the plan should warn of before the search starts (none by default)."""
        return []

    def planned_hparams(self) -> list[dict[str, Any]]:
        """Hyperparameters of every new trial this searcher would create, in order.

        >>> from detflow._search.space import Choice
        >>> GridSearcher({"lr": Choice((0.1, 0.2))}, 8).planned_hparams()
        [{'lr': 0.1}, {'lr': 0.2}]
        """
        planned: list[dict[str, Any]] = []
        while (hparams := self._new_hparams(len(planned))) is not None:
            planned.append(hparams)
        return planned

    def ask(self) -> Job | None:
        """The next job to start now, marked in flight; None until a result comes, or at the end."""
        job = self._next_job()
        if job is None:
            return None
        if job.promotion:
            self._trials[job.trial_id].rung = job.rung
        else:
            self._trials.append(_Trial(job.trial_id, dict(job.hparams), rung=job.rung))
        self._in_flight[job.trial_id] = job
        return job

    def tell(
        self,
        trial_id: int,
        metric: float | None,
        length: int | Fraction,
        error: str | None = None,
        best: float | None = None,
    ) -> None:
        """Record the result of ``trial_id``'s job in flight: its metric and cumulative length.

        ``metric`` is the one at the job's end (the rung's, which promotions compare);
        ``best`` the best at any validation of the trial so far (``result.json``'s
        ``best_metric``; ``metric`` when not given). A set ``error``, a missing metric or a
        nan metric marks the trial FAILED; a failed trial is never promoted and counts against
        ``max_trials``.
        """
        if trial_id not in self._in_flight:
            raise ValueError(f"trial {trial_id} has no job in flight")
        job = self._in_flight.pop(trial_id)
        trial = self._trials[trial_id]
        trial.length_trained = Fraction(length)
        if error is None and metric is None:
            error = "no metric reported"
        elif error is None and metric is not None and math.isnan(metric):
            error = "metric is nan"
        if error is not None:
            trial.error = error
        elif metric is not None:
            trial.metrics[job.rung] = float(metric)
            told = [float(m) for m in (trial.best, metric, best) if m is not None]
            trial.best = min((m for m in told if not math.isnan(m)), key=self._score)
            self._recorded(trial, job.rung)

    def in_flight(self) -> list[Job]:
        """Jobs asked and not yet told, in the order asked: the ones to relaunch on resume."""
        return list(self._in_flight.values())

    @property
    def done(self) -> bool:
        """True when nothing is in flight and :meth:`ask` would return None forever."""
        return not self._in_flight and self._next_job() is None

    def _status(self, trial: _Trial, done: bool) -> TrialStatus:
        return trial_status(
            in_flight=trial.trial_id in self._in_flight,
            failed=trial.error is not None,
            top_rung=trial.rung == len(self.rung_lengths) - 1,
            done=done,
        )

    def trials(self) -> list[TrialRecord]:
        """One record per trial created so far, by trial id."""
        done = self.done
        records = []
        for trial in self._trials:
            best = self._best_of(trial)
            last = trial.metrics[max(trial.metrics)] if trial.metrics else None
            status = self._status(trial, done)
            records.append(
                TrialRecord(
                    trial.trial_id,
                    dict(trial.hparams),
                    status,
                    trial.length_trained,
                    best,
                    last,
                    trial.error,
                    trial.rung,
                )
            )
        return records

    def _best_of(self, trial: _Trial) -> float | None:
        """The trial's best metric: as told, else the best at its rungs' ends."""
        if trial.best is not None or not trial.metrics:
            return trial.best
        return min(trial.metrics.values(), key=self._score)

    def best(self) -> TrialRecord | None:
        """The best trial that did not fail: furthest rung reported first, then by its best
        metric (the best at any of its validations). Trials rank by :func:`rank_key`.
        """
        candidates = [t for t in self._trials if t.metrics and t.error is None]
        if not candidates:
            return None

        def key(trial: _Trial) -> tuple[int, float, int]:
            best = self._best_of(trial)
            assert best is not None  # it has metrics
            return rank_key(max(trial.metrics), best, trial.trial_id, self.smaller_is_better)

        best_id = min(candidates, key=key).trial_id
        return self.trials()[best_id]

    def state_dict(self) -> dict[str, Any]:
        """The searcher's state as JSON-ready data (Fractions as ``"num/den"`` strings)."""
        return {
            "version": _STATE_VERSION,
            "settings": self._settings(),
            "trials": [
                {
                    "trial_id": t.trial_id,
                    "hparams": t.hparams,
                    "rung": t.rung,
                    "metrics": [[rung, m] for rung, m in sorted(t.metrics.items())],
                    "length_trained": _fraction_str(t.length_trained),
                    "error": t.error,
                    "best": t.best,
                }
                for t in self._trials
            ],
            "in_flight": list(self._in_flight),
            "keys": list(self.keys),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``, saved by a searcher built with the same settings.

        Raises ``ValueError`` if the settings that decide the search differ.
        """
        if state.get("version") != _STATE_VERSION or state.get("settings") != self._settings():
            raise ValueError(
                "the saved search state does not match this searcher: "
                f"saved {state.get('settings')}, now {self._settings()}"
            )
        self._trials = [
            _Trial(
                trial_id=int(t["trial_id"]),
                hparams=dict(t["hparams"]),
                rung=int(t["rung"]),
                metrics={int(rung): float(m) for rung, m in t["metrics"]},
                length_trained=Fraction(t["length_trained"]),
                error=t["error"],
                best=None if t.get("best") is None else float(t["best"]),  # older states: none
            )
            for t in state["trials"]
        ]
        self._in_flight = {}
        for trial_id in state["in_flight"]:
            trial = self._trials[trial_id]
            length = self.rung_lengths[trial.rung]
            promotion = trial.rung > self._start_rung(trial_id)
            job = Job(trial_id, dict(trial.hparams), length, trial.rung, promotion)
            self._in_flight[trial_id] = job
        self._reloaded()


class SingleSearcher(Searcher):
    """One trial with fixed ``hparams`` (none by default), trained to ``max_length``.

    Examples
    --------
    >>> SingleSearcher(100, hparams={"lr": 0.1}).ask()
    Job(trial_id=0, hparams={'lr': 0.1}, length=Fraction(100, 1), rung=0, promotion=False)
    """

    def __init__(
        self,
        max_length: int | Fraction,
        *,
        hparams: dict[str, Any] | None = None,
        metric: str = _DEFAULTS.metric,
        smaller_is_better: bool = True,
    ) -> None:
        super().__init__(max_length, metric=metric, smaller_is_better=smaller_is_better)
        self.hparams = dict(hparams or {})
        self.keys = tuple(self.hparams)

    def _new_hparams(self, trial_id: int) -> dict[str, Any] | None:
        return dict(self.hparams) if trial_id == 0 else None


class GridSearcher(Searcher):
    """Every point of the grid (``grid_points`` order) once, at full length.

    Examples
    --------
    >>> from detflow._search.space import Choice
    >>> searcher = GridSearcher({"bs": Choice((16, 32)), "lr": Choice((0.1, 0.2))}, 8)
    >>> [searcher.ask().hparams for _ in range(4)][-1]
    {'bs': 32, 'lr': 0.2}
    >>> searcher.ask() is None
    True
    """

    def __init__(
        self,
        space: Space,
        max_length: int | Fraction,
        *,
        metric: str = _DEFAULTS.metric,
        smaller_is_better: bool = True,
    ) -> None:
        super().__init__(max_length, metric=metric, smaller_is_better=smaller_is_better)
        self.points = grid_points(space)
        self.keys = tuple(space)

    def _new_hparams(self, trial_id: int) -> dict[str, Any] | None:
        return dict(self.points[trial_id]) if trial_id < len(self.points) else None

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "grid_points": len(self.points)}


class RandomSearcher(Searcher):
    """``max_trials`` trials at full length, trial ``i`` drawn from ``Random(f"{seed}:{i}")``.

    Examples
    --------
    >>> from detflow._search.space import Interval
    >>> space = {"lr": Interval(1e-4, 1e-1, log=True)}
    >>> a = RandomSearcher(space, 10, max_trials=3, seed=7)
    >>> b = RandomSearcher(space, 10, max_trials=3, seed=7)
    >>> [a.ask() for _ in range(3)] == [b.ask() for _ in range(3)]
    True
    """

    def __init__(
        self,
        space: Space,
        max_length: int | Fraction,
        max_trials: int,
        *,
        seed: int = 0,
        metric: str = _DEFAULTS.metric,
        smaller_is_better: bool = True,
    ) -> None:
        super().__init__(max_length, metric=metric, smaller_is_better=smaller_is_better)
        self.space = dict(space)
        self.keys = tuple(space)
        self.max_trials = check_count("searcher.max_trials", max_trials, 1)
        self.seed = seed

    def _new_hparams(self, trial_id: int) -> dict[str, Any] | None:
        if trial_id >= self.max_trials:
            return None
        return sample(self.space, random.Random(f"{self.seed}:{trial_id}"))

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "seed": self.seed}


def asha_rungs(
    max_length: int | Fraction,
    divisor: int,
    max_rungs: int,
    steps_of: Callable[[Fraction], int] | None = None,
    min_length: int | Fraction | None = None,
) -> tuple[Fraction, ...]:
    """ASHA's rung lengths, shortest first.

    Without ``min_length``, rung k is ``max_length / divisor**(max_rungs-1-k)``. With it (Ray's
    ``grace_period``), the rungs are ``min_length * divisor**k`` below ``max_length``, then
    ``max_length``; of more than ``max_rungs`` such rungs the top ``max_rungs`` are kept (the
    bottom rung then lies above ``min_length``: see :meth:`AshaSearcher.warnings`). With
    ``steps_of`` (length -> optimizer steps), rungs of equal step count merge into the longest
    of them and rungs of zero steps are dropped; the top rung is always ``max_length``.

    Examples
    --------
    >>> asha_rungs(16, divisor=4, max_rungs=3)
    (Fraction(1, 1), Fraction(4, 1), Fraction(16, 1))
    >>> asha_rungs(2, divisor=2, max_rungs=4, steps_of=lambda length: math.ceil(length))
    (Fraction(1, 1), Fraction(2, 1))
    >>> [str(r) for r in asha_rungs(52, divisor=3, max_rungs=5, min_length=1)]
    ['1', '3', '9', '27', '52']
    >>> [str(r) for r in asha_rungs(52, divisor=3, max_rungs=3, min_length=1)]
    ['9', '27', '52']
    """
    top = Fraction(max_length)
    if min_length is None:
        lengths = [top / divisor ** (max_rungs - 1 - k) for k in range(max_rungs)]
    else:
        low = _check_min_length(min_length, top)
        lengths = []
        while low < top:
            lengths.append(low)
            low *= divisor
        lengths = [*lengths, top][-max_rungs:]
    if steps_of is None:
        return tuple(lengths)
    by_steps: dict[int, Fraction] = {}
    for length in lengths:  # shortest first: the last length stored per step count is the longest
        steps = steps_of(length)
        if steps > 0:
            by_steps[steps] = length
    by_steps[steps_of(top)] = top
    return tuple(sorted(by_steps.values()))


def _check_min_length(min_length: int | Fraction, max_length: Fraction) -> Fraction:
    if (
        isinstance(min_length, bool)
        or not isinstance(min_length, int | Fraction)
        or not 0 < min_length <= max_length
    ):
        raise ConfigError(
            "searcher.min_length",
            shown(min_length),
            f"a positive length up to searcher.max_length ({max_length}), in its unit",
        )
    return Fraction(min_length)


class AshaSearcher(RandomSearcher):
    """Asynchronous successive halving (Li et al., MLSys 2020), promotion-based.

    Whenever asked, it promotes, from the second-highest rung down, a trial that is among the
    top ``floor(n / divisor)`` of the ``n`` results of its rung and not yet promoted; else it
    starts a new trial at rung 0 while fewer than ``max_trials`` exist. Rung lengths come from
    :func:`asha_rungs`. Each rung's results are kept sorted (a
    :class:`~detflow._search.rungs.RungLadder`): a promotion costs O(log n), not a sort of
    every rung.

    A new trial's hyperparameters are drawn from ``Random(f"{seed}:{i}")`` (``sampler``
    ``random``), or (``tpe``) proposed by a density model fitted on the highest rung with
    results enough (:mod:`detflow._search.tpe`), a share ``random_fraction`` of them still at
    random.

    Examples
    --------
    >>> searcher = AshaSearcher({}, max_length=4, max_trials=2, divisor=2, max_rungs=2)
    >>> searcher.rung_lengths
    (Fraction(2, 1), Fraction(4, 1))
    >>> for metric in (0.5, 0.3):
    ...     job = searcher.ask()
    ...     searcher.tell(job.trial_id, metric, job.length)
    >>> searcher.ask()
    Job(trial_id=1, hparams={}, length=Fraction(4, 1), rung=1, promotion=True)
    """

    def __init__(
        self,
        space: Space,
        max_length: int | Fraction,
        max_trials: int,
        *,
        divisor: int = _DEFAULTS.divisor,
        max_rungs: int = _DEFAULTS.max_rungs,
        min_length: int | Fraction | None = None,
        sampler: str = _DEFAULTS.sampler,
        random_fraction: float = _DEFAULTS.random_fraction,
        seed: int = 0,
        metric: str = _DEFAULTS.metric,
        smaller_is_better: bool = True,
        steps_of: Callable[[Fraction], int] | None = None,
    ) -> None:
        super().__init__(
            space,
            max_length,
            max_trials,
            seed=seed,
            metric=metric,
            smaller_is_better=smaller_is_better,
        )
        self.divisor = check_count("searcher.divisor", divisor, 2)
        check_count("searcher.max_rungs", max_rungs, 1, MAX_RUNGS)
        if sampler not in SAMPLERS:
            raise ConfigError("searcher.sampler", shown(sampler), f"one of {', '.join(SAMPLERS)}")
        self.sampler = sampler
        self.tpe = TpeSettings(random_fraction=random_fraction)
        self.min_length = None if min_length is None else Fraction(min_length)
        self.max_rungs = max_rungs
        self.rung_lengths = asha_rungs(self.max_length, divisor, max_rungs, steps_of, min_length)
        self._ladder = RungLadder(len(self.rung_lengths))
        self._told = 0  # results recorded so far
        #: the model last fitted, and on what: (its rung, that rung's number of results)
        self._model: tuple[tuple[int, int], DensityModel] | None = None
        self._peeking = False  # True while `done` asks whether a job is left (no proposal)

    def _group(self, trial_id: int) -> int:
        """Which of the ladder's groups ``trial_id`` is promoted within (one for ASHA)."""
        return 0

    def _recorded(self, trial: _Trial, rung: int) -> None:
        self._told += 1
        waiting = trial.rung == rung and trial.error is None
        score = self._score(trial.metrics[rung])
        self._ladder.add(self._group(trial.trial_id), rung, trial.trial_id, score, waiting)

    def _reloaded(self) -> None:
        self._ladder = RungLadder(len(self.rung_lengths))
        self._model = None
        self._told = 0
        for trial in self._trials:
            for rung in sorted(trial.metrics):
                self._recorded(trial, rung)

    def ask(self) -> Job | None:
        job = super().ask()
        if job is not None and job.promotion:
            self._ladder.close(self._group(job.trial_id), job.rung - 1, job.trial_id)
        return job

    def _promotion(self) -> int | None:
        return self._ladder.promotable(0, range(len(self.rung_lengths) - 2, -1, -1), self.divisor)

    def _model_rung(self) -> int | None:
        """The rung the density model is fitted on: the highest with results enough."""
        least = min_observations(self.space)
        for rung in range(len(self.rung_lengths) - 1, -1, -1):
            if self._ladder.count(rung) >= least:
                return rung
        return None

    def density_model(self) -> DensityModel | None:
        """The density model new trials are proposed from now (None: too few results yet)."""
        rung = self._model_rung()
        if rung is None:
            return None
        key = (rung, self._ladder.count(rung))  # a rung's results are only ever added to
        if self._model is None or self._model[0] != key:
            ranked = [self._trials[t].hparams for _, t in self._ladder.ranked(rung)]
            self._model = (key, DensityModel(self.space, ranked, self.tpe))
        return self._model[1]

    @property
    def done(self) -> bool:
        self._peeking = True  # whether a new trial may start, not its proposal, matters here
        try:
            return super().done
        finally:
            self._peeking = False

    def _new_hparams(self, trial_id: int) -> dict[str, Any] | None:
        if trial_id >= self.max_trials:
            return None
        if self.sampler == "tpe" and not self._peeking:
            model = self.density_model()
            if model is not None:
                point = propose(model, random.Random(f"{self.seed}:{trial_id}:tpe"))
                if point is not None:
                    return point
        return super()._new_hparams(trial_id)

    def warnings(self) -> list[str]:
        """A warning when ``max_trials`` is too few for any trial to reach the top rung, and
        when ``max_rungs`` keeps the bottom rung above ``min_length``.

        >>> AshaSearcher({}, max_length=256, max_trials=16, divisor=4, max_rungs=5).warnings()
        ['16 trials, divisor 4: rung 4 needs 256; nothing will train to max_length']
        >>> AshaSearcher({}, 64, 64, divisor=2, max_rungs=3, min_length=1).warnings()
        ['searcher.max_rungs 3 keeps the top 3 rungs: the bottom rung is 16, not min_length 1']
        """
        found = []
        top = len(self.rung_lengths) - 1
        needed = self.divisor**top
        if self.max_trials < needed:
            found.append(
                f"{self.max_trials} trials, divisor {self.divisor}: rung {top} needs {needed}; "
                "nothing will train to max_length"
            )
        if self.min_length is not None and self.rung_lengths[0] > self.min_length:
            full = asha_rungs(self.max_length, self.divisor, MAX_RUNGS, None, self.min_length)
            if len(full) > self.max_rungs:
                found.append(
                    f"searcher.max_rungs {self.max_rungs} keeps the top {self.max_rungs} rungs: "
                    f"the bottom rung is {self.rung_lengths[0]}, not min_length {self.min_length}"
                )
        return found

    def _settings(self) -> dict[str, Any]:
        settings = {**super()._settings(), "divisor": self.divisor}
        if self.sampler != "random":  # states saved before samplers existed still load
            settings.update(sampler=self.sampler, random_fraction=self.tpe.random_fraction)
        return settings


@dataclass(frozen=True)
class RungTrust:
    """What :class:`BohbSearcher` learned of one rung: how the ``pairs`` trials with results
    at both ``rung`` and ``compared_with`` rank at each (Spearman's ``correlation``), and so
    whether the rung ``misleads`` (ranks them unlike the longer rung does).

    >>> RungTrust(rung=0, compared_with=2, pairs=9, correlation=-0.5, misleads=True).misleads
    True
    """

    rung: int
    compared_with: int
    pairs: int
    correlation: float
    misleads: bool


class BohbSearcher(AshaSearcher):
    """BOHB (Falkner et al., ICML 2018) on ASHA's promotions: new trials' hyperparameters from
    the TPE density model (:mod:`detflow._search.tpe`, ``random_fraction`` of them at random),
    promotions as :class:`AshaSearcher`'s, and a guard against rungs that mislead.

    A short rung misleads when its ranking of trials is unlike a longer rung's: at a rung
    where 1 epoch's accuracy ranks configurations against their final accuracy, ASHA keeps
    the worst. So for each rung ``r`` below the top that shares at least :attr:`MIN_PAIRS`
    trials with rung ``r + 1`` (the trials promoted from it that reported there), BOHB
    compares the two rungs by Spearman's rank correlation of those trials' metrics at each
    (:meth:`rung_trust`; the next rung, not the top: the trials that reached the top are few
    and lie too close together to rank). The rung misleads when the correlation is below
    :attr:`MISLEADING_BELOW` even one standard error higher (Fisher's ``z``, ``1 / sqrt(pairs -
    3)``: with 8 pairs below -0.42, with 40 below -0.16), so that the noise of a few promoted
    trials (whose results lie close together) is not taken for a misleading rung. Then:

    - new trials start above the highest misleading rung (:meth:`start_rung`), so no new trial
      is judged by a rung that misleads (trials already there are promoted as ASHA does: their
      results at the next rung keep the comparison going);
    - the model is fitted only on rungs from there up (the highest with results enough; until
      one has, proposals are random).

    Until a rung has :attr:`MIN_PAIRS` pairs it is trusted (ASHA's own assumption). Everything
    decided here is a function of the results told, so a resumed search decides the same; the
    state adds each trial's start rung.

    Examples
    --------
    >>> from detflow._search.space import Interval
    >>> searcher = BohbSearcher({"x": Interval(0.0, 1.0)}, max_length=9, max_trials=30,
    ...                         divisor=3, max_rungs=3)
    >>> searcher.rung_lengths, searcher.start_rung()
    ((Fraction(1, 1), Fraction(3, 1), Fraction(9, 1)), 0)
    """

    #: Trials with results at both rungs before their rank correlation is trusted.
    MIN_PAIRS = 8
    #: A rung whose rank correlation with a longer one is below this misleads.
    MISLEADING_BELOW = 0.0

    def __init__(
        self,
        space: Space,
        max_length: int | Fraction,
        max_trials: int,
        *,
        divisor: int = _DEFAULTS.divisor,
        max_rungs: int = _DEFAULTS.max_rungs,
        min_length: int | Fraction | None = None,
        random_fraction: float = _DEFAULTS.random_fraction,
        seed: int = 0,
        metric: str = _DEFAULTS.metric,
        smaller_is_better: bool = True,
        steps_of: Callable[[Fraction], int] | None = None,
    ) -> None:
        super().__init__(
            space,
            max_length,
            max_trials,
            divisor=divisor,
            max_rungs=max_rungs,
            min_length=min_length,
            sampler="tpe",
            random_fraction=random_fraction,
            seed=seed,
            metric=metric,
            smaller_is_better=smaller_is_better,
            steps_of=steps_of,
        )
        self._start_of: list[int] = []  # trial id -> the rung it started at
        self._trust: tuple[int, list[RungTrust]] | None = None  # (results told, trust)

    def rung_trust(self) -> list[RungTrust]:
        """What the results say of each rung below the top that shares :attr:`MIN_PAIRS`
        trials with the next (see the class docstring)."""
        if self._trust is not None and self._trust[0] == self._told:
            return self._trust[1]
        found = []
        top = len(self.rung_lengths) - 1
        for rung in range(top):
            here = self._ladder.rung(0, rung)
            pairs = [
                (here_score, score)
                for score, t in self._ladder.rung(0, rung + 1).ranked()
                if (here_score := here.score(t)) is not None
            ]
            if len(pairs) < self.MIN_PAIRS:
                continue
            rho = rank_correlation([a for a, _ in pairs], [b for _, b in pairs])
            z = math.atanh(min(max(rho, -0.999999), 0.999999))
            misleads = math.tanh(z + 1 / math.sqrt(len(pairs) - 3)) < self.MISLEADING_BELOW
            found.append(RungTrust(rung, rung + 1, len(pairs), rho, misleads))
        self._trust = (self._told, found)
        return found

    def start_rung(self) -> int:
        """The rung new trials start at now: above the highest rung that misleads."""
        misleading = [t.rung for t in self.rung_trust() if t.misleads]
        return max(misleading) + 1 if misleading else 0

    def _new_trial_rung(self) -> int:
        return self.start_rung()

    def _start_rung(self, trial_id: int) -> int:
        return self._start_of[trial_id]

    def _model_rung(self) -> int | None:
        rung = super()._model_rung()
        return rung if rung is not None and rung >= self.start_rung() else None

    def ask(self) -> Job | None:
        job = super().ask()
        if job is not None and not job.promotion:
            self._start_of.append(job.rung)
        return job

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "min_pairs": self.MIN_PAIRS,
            "misleading_below": self.MISLEADING_BELOW,
        }

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Searcher.state_dict`, each trial's start rung by trial id, and (to read,
        never loaded) what the search learned of its rungs."""
        return {
            **super().state_dict(),
            "start_rungs": list(self._start_of),
            "rung_trust": [
                {
                    "rung": t.rung,
                    "compared_with": t.compared_with,
                    "pairs": t.pairs,
                    "correlation": t.correlation,
                    "misleads": t.misleads,
                }
                for t in self.rung_trust()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION or state.get("settings") != self._settings():
            super().load_state_dict(state)  # refuses it, naming both settings
        starts = state.get("start_rungs")
        if not isinstance(starts, list) or len(starts) != len(state.get("trials") or []):
            raise ValueError("the saved search state does not say each trial's start rung")
        top = len(self.rung_lengths) - 1
        if not all(isinstance(r, int) and 0 <= r <= top for r in starts):
            raise ValueError(f"the saved search state names rungs this search lacks: {starts}")
        previous = self._start_of
        self._start_of = [int(r) for r in starts]
        try:
            super().load_state_dict(state)
        except Exception:
            self._start_of = previous
            raise
        self._trust = None


#: ``searcher.mode`` -> the rung counts of adaptive_asha's brackets, from ``max_rungs``.
MODE_BRACKETS: dict[str, Callable[[int], list[int]]] = {
    "aggressive": lambda rungs: [rungs],
    "standard": lambda rungs: list(range((rungs - 1) // 2 + 1, rungs + 1)),
    "conservative": lambda rungs: list(range(1, rungs + 1)),
}


@dataclass(frozen=True)
class Bracket:
    """One of adaptive_asha's brackets: an ASHA of ``rungs`` rungs over ``max_trials``
    trials, at most ``max_concurrent_trials`` of them running at once.

    >>> Bracket(rungs=3, max_trials=12, max_concurrent_trials=1)
    Bracket(rungs=3, max_trials=12, max_concurrent_trials=1)
    """

    rungs: int
    max_trials: int
    max_concurrent_trials: int


def _floor_log(value: int, base: int) -> int:
    """The largest ``k`` with ``base**k <= value`` (``value >= 1``), in exact integers."""
    k = 0
    while base ** (k + 1) <= value:
        k += 1
    return k


def adaptive_brackets(
    max_length: int | Fraction,
    max_trials: int,
    *,
    mode: str = _DEFAULTS.mode,
    divisor: int = _DEFAULTS.divisor,
    max_rungs: int = _DEFAULTS.max_rungs,
    bracket_rungs: Sequence[int] = (),
    max_concurrent_trials: int = _DEFAULTS.max_concurrent_trials,
    min_length: int | Fraction | None = None,
) -> tuple[Bracket, ...]:
    """adaptive_asha's brackets as Determined's ``adaptive_asha.go`` made them.

    Without ``bracket_rungs``, ``max_rungs`` is first capped so that the top rung can hold a
    trial (``1 + floor(log_divisor(max_length))`` and ``1 + floor(log_divisor(max_trials))``,
    in exact integers where Determined used floating point; with ``min_length``, the first
    by the number of rungs from ``min_length`` up, :func:`asha_rungs`), then ``mode`` gives the rung
    counts: aggressive one bracket of ``max_rungs``; standard ``(max_rungs - 1) // 2 + 1`` to
    ``max_rungs``; conservative 1 to ``max_rungs``. Brackets come most rungs first (most
    early stopping). ``max_trials`` is split so each bracket gets about the same training
    budget (weight ``divisor**(rungs-1) / rungs``; each at least 1 trial, so more brackets
    than ``max_trials`` start more trials than it says; the remainder to the first), and
    ``max_concurrent_trials`` evenly (at least 1 each, the remainder to the first brackets;
    0: ``max(last bracket's trials, divisor)`` each). The sweep still runs at most
    ``max_concurrent_trials`` at once in all.

    Examples
    --------
    Determined's defaults (16 trials, 5 rungs, divisor 4, standard): the cap leaves 3 rungs.

    >>> adaptive_brackets(937, 16, max_concurrent_trials=2)
    (Bracket(rungs=3, max_trials=12, max_concurrent_trials=1), \
Bracket(rungs=2, max_trials=4, max_concurrent_trials=1))
    >>> [b.max_trials for b in adaptive_brackets(10**6, 100, bracket_rungs=[2, 4, 3])]
    [70, 22, 8]
    """
    if mode not in MODE_BRACKETS:
        raise ConfigError("searcher.mode", shown(mode), f"one of {', '.join(MODE_BRACKETS)}")
    check_count("searcher.max_trials", max_trials, 1)
    check_count("searcher.divisor", divisor, 2)
    check_count("searcher.max_rungs", max_rungs, 1, MAX_RUNGS)
    check_count("searcher.max_concurrent_trials", max_concurrent_trials, 0)
    for rungs in bracket_rungs:
        check_count("searcher.bracket_rungs", rungs, 1, MAX_RUNGS)
    if bracket_rungs:
        counts = list(bracket_rungs)
    else:
        if min_length is None:
            units = max(1, math.floor(Fraction(max_length)))
            ladder = _floor_log(units, divisor) + 1
        else:
            ladder = len(asha_rungs(max_length, divisor, MAX_RUNGS, None, min_length))
        capped = min(max_rungs, ladder, _floor_log(max_trials, divisor) + 1)
        counts = MODE_BRACKETS[mode](capped)
    counts.sort(reverse=True)
    trials = bracket_trials(max_trials, divisor, counts)
    concurrent = bracket_concurrency(max_concurrent_trials, divisor, trials)
    return tuple(
        Bracket(rungs, t, c) for rungs, t, c in zip(counts, trials, concurrent, strict=True)
    )


def bracket_trials(max_trials: int, divisor: int, rungs: Sequence[int]) -> list[int]:
    """``max_trials`` split over brackets of ``rungs`` rungs so that each gets about the same
    training budget: weight ``divisor**(r-1) / r``, at least 1 each, the remainder to the
    first (Determined's ``getBracketMaxTrials``, in exact fractions).

    >>> bracket_trials(20, 3, [3, 2, 1]), bracket_trials(50, 4, [3, 2])
    ([12, 5, 3], [37, 13])
    """
    weights = [Fraction(divisor ** (r - 1), r) for r in rungs]
    total = sum(weights)
    trials = [max(math.floor(w / total * max_trials), 1) for w in weights]
    trials[0] += max(max_trials - sum(trials), 0)
    return trials


def bracket_concurrency(
    max_concurrent_trials: int, divisor: int, trials: Sequence[int]
) -> list[int]:
    """``max_concurrent_trials`` split evenly over the brackets, at least 1 each, the
    remainder to the first; 0 gives each ``max(last bracket's trials, divisor)``
    (Determined's ``getBracketMaxConcurrentTrials``).

    >>> bracket_concurrency(11, 3, [9, 3, 1]), bracket_concurrency(0, 4, [40, 10])
    ([4, 4, 3], [10, 10])
    """
    n = len(trials)
    if max_concurrent_trials == 0:
        return [max(trials[-1], divisor)] * n
    at_once = max(max_concurrent_trials, n)
    return [at_once // n + (1 if i < at_once % n else 0) for i in range(n)]


class AdaptiveAshaSearcher(AshaSearcher):
    """Determined's ``adaptive_asha``: several promotion-based ASHA brackets at once.

    The brackets (:func:`adaptive_brackets`) differ in how early they stop: the first has
    the most rungs, the last the fewest, so some trials always train to ``max_length``.
    Rung lengths are :func:`asha_rungs`' for each bracket's rung count; a bracket of ``r``
    rungs uses the top ``r`` (after merging) of the ladder of the bracket with the most, so
    ``rung`` indexes one ladder for every trial (:attr:`rung_lengths`) and ranking by the
    furthest rung compares lengths. Each bracket promotes as :class:`AshaSearcher` does,
    among its own trials, and starts new trials while it has fewer than its ``max_trials``
    and fewer than its ``max_concurrent_trials`` running; of the brackets that can start a
    job, the least busy goes first (running / its limit, then trials started / its
    ``max_trials``, then bracket order). Trial ``i`` is drawn from ``Random(f"{seed}:{i}")``
    whatever its bracket.

    Examples
    --------
    >>> searcher = AdaptiveAshaSearcher({}, max_length=16, max_trials=8, divisor=4,
    ...                                 max_rungs=2, max_concurrent_trials=2)
    >>> [(b.rungs, b.max_trials) for b in searcher.brackets], searcher.rung_lengths
    ([(2, 6), (1, 2)], (Fraction(4, 1), Fraction(16, 1)))
    >>> [(job.trial_id, job.rung, job.length) for job in (searcher.ask(), searcher.ask())]
    [(0, 0, Fraction(4, 1)), (1, 1, Fraction(16, 1))]
    """

    def __init__(
        self,
        space: Space,
        max_length: int | Fraction,
        max_trials: int,
        *,
        mode: str = _DEFAULTS.mode,
        divisor: int = _DEFAULTS.divisor,
        max_rungs: int = _DEFAULTS.max_rungs,
        bracket_rungs: Sequence[int] = (),
        max_concurrent_trials: int = _DEFAULTS.max_concurrent_trials,
        min_length: int | Fraction | None = None,
        sampler: str = _DEFAULTS.sampler,
        random_fraction: float = _DEFAULTS.random_fraction,
        seed: int = 0,
        metric: str = _DEFAULTS.metric,
        smaller_is_better: bool = True,
        steps_of: Callable[[Fraction], int] | None = None,
    ) -> None:
        self.brackets = adaptive_brackets(
            max_length,
            max_trials,
            mode=mode,
            divisor=divisor,
            max_rungs=max_rungs,
            bracket_rungs=bracket_rungs,
            max_concurrent_trials=max_concurrent_trials,
            min_length=min_length,
        )
        total = sum(b.max_trials for b in self.brackets)
        self._bracket_of: list[int] = []  # trial id -> bracket index
        super().__init__(
            space,
            max_length,
            total,
            divisor=divisor,
            max_rungs=self.brackets[0].rungs,
            min_length=min_length,
            sampler=sampler,
            random_fraction=random_fraction,
            seed=seed,
            metric=metric,
            smaller_is_better=smaller_is_better,
            steps_of=steps_of,
        )
        self.mode = mode
        ladder = self.rung_lengths
        #: Where each bracket's rungs start on :attr:`rung_lengths`.
        self.bracket_starts: tuple[int, ...] = tuple(
            len(ladder) - len(asha_rungs(self.max_length, divisor, b.rungs, steps_of, min_length))
            for b in self.brackets
        )
        self._chosen = 0  # the bracket of the new trial _next_job last proposed
        self._started = [0] * len(self.brackets)  # trials started per bracket

    def bracket_rung_lengths(self, bracket: int) -> tuple[Fraction, ...]:
        """The rung lengths of ``bracket``, shortest first (a suffix of :attr:`rung_lengths`)."""
        return self.rung_lengths[self.bracket_starts[bracket] :]

    def _start_rung(self, trial_id: int) -> int:
        return self.bracket_starts[self._bracket_of[trial_id]]

    def _group(self, trial_id: int) -> int:
        return self._bracket_of[trial_id]

    def _reloaded(self) -> None:
        super()._reloaded()
        self._started = [0] * len(self.brackets)
        for bracket in self._bracket_of:
            self._started[bracket] += 1

    def _next_job(self) -> Job | None:
        running = [0] * len(self.brackets)
        started = self._started
        for trial_id in self._in_flight:
            running[self._bracket_of[trial_id]] += 1
        order = sorted(
            range(len(self.brackets)),
            key=lambda b: (
                Fraction(running[b], self.brackets[b].max_concurrent_trials),
                Fraction(started[b], self.brackets[b].max_trials),
                b,
            ),
        )
        for b in order:
            if running[b] >= self.brackets[b].max_concurrent_trials:
                continue
            top = len(self.rung_lengths) - 1
            rungs = range(top - 1, self.bracket_starts[b] - 1, -1)
            promoted = self._ladder.promotable(b, rungs, self.divisor)
            if promoted is not None:
                trial = self._trials[promoted]
                rung = trial.rung + 1
                return Job(promoted, dict(trial.hparams), self.rung_lengths[rung], rung, True)
            if started[b] < self.brackets[b].max_trials:
                trial_id = len(self._trials)
                hparams = self._new_hparams(trial_id)
                assert hparams is not None  # fewer trials than the brackets' total
                self._chosen = b
                start = self.bracket_starts[b]
                return Job(trial_id, hparams, self.rung_lengths[start], start, False)
        return None

    def ask(self) -> Job | None:
        job = super().ask()
        if job is not None and not job.promotion:
            self._bracket_of.append(self._chosen)
            self._started[self._chosen] += 1
        return job

    def warnings(self) -> list[str]:
        """A warning when no bracket has trials enough for any to reach ``max_length``.

        >>> AdaptiveAshaSearcher({}, 256, 4, bracket_rungs=[4, 3]).warnings()  # doctest: +ELLIPSIS
        ['no bracket can train a trial to max_length: ...']
        """
        short = []
        for b, bracket in enumerate(self.brackets):
            top = len(self.bracket_rung_lengths(b)) - 1
            if bracket.max_trials >= self.divisor**top:
                return []
            short.append(
                f"bracket {b + 1} has {bracket.max_trials} trials, rung {top} needs "
                f"{self.divisor**top}"
            )
        return [f"no bracket can train a trial to max_length: {'; '.join(short)}"]

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "brackets": [[b.rungs, b.max_trials, b.max_concurrent_trials] for b in self.brackets],
        }

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Searcher.state_dict` and the bracket of every trial, by trial id."""
        return {**super().state_dict(), "brackets": list(self._bracket_of)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION or state.get("settings") != self._settings():
            super().load_state_dict(state)  # refuses it, naming both settings
        brackets = state.get("brackets")
        if not isinstance(brackets, list) or len(brackets) != len(state.get("trials") or []):
            raise ValueError("the saved search state does not say each trial's bracket")
        if not all(isinstance(b, int) and 0 <= b < len(self.brackets) for b in brackets):
            raise ValueError(f"the saved search state names brackets this search lacks: {brackets}")
        previous = self._bracket_of
        self._bracket_of = [int(b) for b in brackets]
        try:
            super().load_state_dict(state)
        except Exception:
            self._bracket_of = previous
            raise


def make_searcher(
    name: str,
    *,
    space: Space,
    max_length: int | Fraction,
    max_trials: int,
    seed: int,
    metric: str,
    smaller_is_better: bool,
    divisor: int = _DEFAULTS.divisor,
    max_rungs: int = _DEFAULTS.max_rungs,
    mode: str = _DEFAULTS.mode,
    bracket_rungs: Sequence[int] = (),
    max_concurrent_trials: int = _DEFAULTS.max_concurrent_trials,
    steps_of: Callable[[Fraction], int] | None = None,
    pbt: PbtSettings | None = None,
    min_length: int | Fraction | None = None,
    sampler: str = _DEFAULTS.sampler,
    random_fraction: float = _DEFAULTS.random_fraction,
) -> Searcher:
    """Build the searcher ``name`` (single, grid, random, asha, adaptive_asha, bohb or pbt) from
    ``searcher.*`` settings; Determined's older names (``adaptive``, ``adaptive_simple``,
    ``async_halving``) build the searcher that does what they did.

    ``single`` takes a space of one-value choices only (fixed hyperparameters); ``grid``
    ignores ``max_trials``; ``min_length`` is for asha, adaptive_asha and bohb, ``sampler``
    for asha and adaptive_asha (bohb always proposes with its model). Every count is checked,
    whichever searcher uses it.

    Examples
    --------
    >>> make_searcher("asha", space={}, max_length=16, max_trials=8, seed=0,
    ...               metric="validation_loss", smaller_is_better=True, max_rungs=3).rung_lengths
    (Fraction(1, 1), Fraction(4, 1), Fraction(16, 1))
    >>> type(make_searcher("adaptive", space={}, max_length=16, max_trials=8, seed=0,
    ...                    metric="loss", smaller_is_better=True)).__name__
    'AdaptiveAshaSearcher'
    >>> make_searcher("bogus", space={}, max_length=1, max_trials=1, seed=0,
    ...               metric="loss", smaller_is_better=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: searcher.name = 'bogus' is not valid: expected one of ...
    """
    check_count("searcher.max_trials", max_trials, 1)
    check_count("searcher.divisor", divisor, 2)
    check_count("searcher.max_rungs", max_rungs, 1, MAX_RUNGS)
    if not isinstance(name, str):
        raise ConfigError("searcher.name", shown(name), f"one of {', '.join(SEARCHER_NAMES)}")
    name = SEARCHER_ALIASES.get(name, name)
    common: dict[str, Any] = {"metric": metric, "smaller_is_better": smaller_is_better}
    if name == "single":
        for key, dim in sorted(space.items()):
            if not (isinstance(dim, Choice) and len(dim.values) == 1):
                expected = "one value with searcher.name=single (grid, random, asha search)"
                raise ConfigError(key, dim, expected)
        fixed = {key: dim.values[0] for key, dim in space.items() if isinstance(dim, Choice)}
        return SingleSearcher(max_length, hparams=fixed, **common)
    if name == "grid":
        return GridSearcher(space, max_length, **common)
    if name == "random":
        return RandomSearcher(space, max_length, max_trials, seed=seed, **common)
    rungs: dict[str, Any] = {"divisor": divisor, "max_rungs": max_rungs, "min_length": min_length}
    if name == "bohb":
        return BohbSearcher(
            space,
            max_length,
            max_trials,
            **rungs,
            random_fraction=random_fraction,
            seed=seed,
            steps_of=steps_of,
            **common,
        )
    proposals: dict[str, Any] = {"sampler": sampler, "random_fraction": random_fraction}
    if name == "asha":
        return AshaSearcher(
            space,
            max_length,
            max_trials,
            **rungs,
            **proposals,
            seed=seed,
            steps_of=steps_of,
            **common,
        )
    if name == "adaptive_asha":
        return AdaptiveAshaSearcher(
            space,
            max_length,
            max_trials,
            mode=mode,
            **rungs,
            **proposals,
            bracket_rungs=bracket_rungs,
            max_concurrent_trials=max_concurrent_trials,
            seed=seed,
            steps_of=steps_of,
            **common,
        )
    if name == "pbt":
        from detflow._search.pbt import make_pbt  # it builds on this module's Searcher

        return make_pbt(space, max_length, pbt, seed=seed, **common)
    raise ConfigError("searcher.name", shown(name), f"one of {', '.join(SEARCHER_NAMES)}")
