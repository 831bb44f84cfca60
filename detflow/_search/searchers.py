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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from detflow._core.artifacts import TrialStatus
from detflow._core.counts import check_count
from detflow._core.errors import ConfigError
from detflow._core.experiment import MAX_RUNGS, SEARCHER_ALIASES, SEARCHER_NAMES
from detflow._core.schema import SearcherConfig
from detflow._core.text import shown
from detflow._search.space import Choice, Space, grid_points, sample

__all__ = [
    "MODE_BRACKETS",
    "AdaptiveAshaSearcher",
    "AshaSearcher",
    "Bracket",
    "GridSearcher",
    "Job",
    "RandomSearcher",
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
        return Job(trial_id, hparams, self.rung_lengths[0], 0, False)

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
) -> tuple[Fraction, ...]:
    """ASHA's rung lengths, shortest first: rung k is ``max_length / divisor**(max_rungs-1-k)``.

    With ``steps_of`` (length -> optimizer steps), rungs of equal step count merge into the
    longest of them and rungs of zero steps are dropped; the top rung is always ``max_length``.

    Examples
    --------
    >>> asha_rungs(16, divisor=4, max_rungs=3)
    (Fraction(1, 1), Fraction(4, 1), Fraction(16, 1))
    >>> asha_rungs(2, divisor=2, max_rungs=4, steps_of=lambda length: math.ceil(length))
    (Fraction(1, 1), Fraction(2, 1))
    """
    top = Fraction(max_length)
    lengths = [top / divisor ** (max_rungs - 1 - k) for k in range(max_rungs)]
    if steps_of is None:
        return tuple(lengths)
    by_steps: dict[int, Fraction] = {}
    for length in lengths:  # shortest first: the last length stored per step count is the longest
        steps = steps_of(length)
        if steps > 0:
            by_steps[steps] = length
    by_steps[steps_of(top)] = top
    return tuple(sorted(by_steps.values()))


class AshaSearcher(RandomSearcher):
    """Asynchronous successive halving (Li et al., MLSys 2020), promotion-based.

    Whenever asked, it promotes, from the second-highest rung down, a trial that is among the
    top ``floor(n / divisor)`` of the ``n`` results of its rung and not yet promoted; else it
    starts a new trial at rung 0 while fewer than ``max_trials`` exist. Rung lengths come from
    :func:`asha_rungs`.

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
        self.rung_lengths = asha_rungs(self.max_length, divisor, max_rungs, steps_of)

    def _promotion(self) -> int | None:
        return _promotable(self._trials, range(len(self.rung_lengths) - 2, -1, -1), self)

    def warnings(self) -> list[str]:
        """A warning when ``max_trials`` is too few for any trial to reach the top rung.

        >>> AshaSearcher({}, max_length=256, max_trials=16, divisor=4, max_rungs=5).warnings()
        ['16 trials, divisor 4: rung 4 needs 256; nothing will train to max_length']
        """
        top = len(self.rung_lengths) - 1
        needed = self.divisor**top
        if self.max_trials >= needed:
            return []
        return [
            f"{self.max_trials} trials, divisor {self.divisor}: rung {top} needs {needed}; "
            "nothing will train to max_length"
        ]

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "divisor": self.divisor}


def _promotable(
    trials: Sequence[_Trial], rungs: Iterable[int], searcher: AshaSearcher
) -> int | None:
    """ASHA's promotion: from the first of ``rungs`` on, a trial among the top
    ``floor(n / divisor)`` of the ``n`` results at its rung, not yet promoted, not failed."""
    for rung in rungs:
        reported = [t for t in trials if rung in t.metrics]
        reported.sort(key=lambda t: (searcher._score(t.metrics[rung]), t.trial_id))
        for trial in reported[: len(reported) // searcher.divisor]:
            if trial.rung == rung and trial.error is None:
                return trial.trial_id
    return None


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
) -> tuple[Bracket, ...]:
    """adaptive_asha's brackets as Determined's ``adaptive_asha.go`` made them.

    Without ``bracket_rungs``, ``max_rungs`` is first capped so that the top rung can hold a
    trial (``1 + floor(log_divisor(max_length))`` and ``1 + floor(log_divisor(max_trials))``,
    in exact integers where Determined used floating point), then ``mode`` gives the rung
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
        units = max(1, math.floor(Fraction(max_length)))
        capped = min(max_rungs, _floor_log(units, divisor) + 1, _floor_log(max_trials, divisor) + 1)
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
        )
        total = sum(b.max_trials for b in self.brackets)
        super().__init__(
            space,
            max_length,
            total,
            divisor=divisor,
            max_rungs=self.brackets[0].rungs,
            seed=seed,
            metric=metric,
            smaller_is_better=smaller_is_better,
            steps_of=steps_of,
        )
        self.mode = mode
        ladder = self.rung_lengths
        #: Where each bracket's rungs start on :attr:`rung_lengths`.
        self.bracket_starts: tuple[int, ...] = tuple(
            len(ladder) - len(asha_rungs(self.max_length, divisor, b.rungs, steps_of))
            for b in self.brackets
        )
        self._bracket_of: list[int] = []  # trial id -> bracket index
        self._chosen = 0  # the bracket of the new trial _next_job last proposed

    def bracket_rung_lengths(self, bracket: int) -> tuple[Fraction, ...]:
        """The rung lengths of ``bracket``, shortest first (a suffix of :attr:`rung_lengths`)."""
        return self.rung_lengths[self.bracket_starts[bracket] :]

    def _start_rung(self, trial_id: int) -> int:
        return self.bracket_starts[self._bracket_of[trial_id]]

    def _next_job(self) -> Job | None:
        running = [0] * len(self.brackets)
        started = [0] * len(self.brackets)
        for trial_id in self._in_flight:
            running[self._bracket_of[trial_id]] += 1
        for bracket in self._bracket_of:
            started[bracket] += 1
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
            mine = [t for t in self._trials if self._bracket_of[t.trial_id] == b]
            top = len(self.rung_lengths) - 1
            promoted = _promotable(mine, range(top - 1, self.bracket_starts[b] - 1, -1), self)
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
) -> Searcher:
    """Build the searcher ``name`` (single, grid, random, asha or adaptive_asha) from
    ``searcher.*`` settings; Determined's older names (``adaptive``, ``adaptive_simple``,
    ``async_halving``) build the searcher that does what they did.

    ``single`` takes a space of one-value choices only (fixed hyperparameters); ``grid``
    ignores ``max_trials``. Every count is checked, whichever searcher uses it.

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
    if name == "asha":
        return AshaSearcher(
            space,
            max_length,
            max_trials,
            divisor=divisor,
            max_rungs=max_rungs,
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
            divisor=divisor,
            max_rungs=max_rungs,
            bracket_rungs=bracket_rungs,
            max_concurrent_trials=max_concurrent_trials,
            seed=seed,
            steps_of=steps_of,
            **common,
        )
    raise ConfigError("searcher.name", shown(name), f"one of {', '.join(SEARCHER_NAMES)}")
