"""The ask/tell interface every searcher shares: :class:`Searcher`, its :class:`Job` and its
:class:`TrialRecord`.

Pure Python: nothing here knows of Hydra, OmegaConf or torch. A driver asks a
:class:`Searcher` for the next :class:`Job` whenever a worker is free, runs it, and tells the
searcher the result. Lengths are exact :class:`~fractions.Fraction` amounts of the searcher's
unit (``searcher.max_length``'s). The whole state is JSON, so a killed search resumes where
it stopped: :meth:`Searcher.in_flight` lists the jobs to relaunch. The searchers themselves
are in :mod:`detflow._search.searchers` and :mod:`detflow._search.pbt`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from detflow._core.artifacts import TrialStatus
from detflow._core.errors import ConfigError
from detflow._core.schema import SearcherConfig
from detflow._core.text import shown

__all__ = [
    "STATE_VERSION",
    "Job",
    "Searcher",
    "TrialRecord",
    "TrialState",
    "check_length",
    "fraction_str",
    "rank_key",
    "trial_status",
]

_DEFAULTS = SearcherConfig()  # the schema is the one table of defaults
#: The version of :meth:`Searcher.state_dict`'s layout.
STATE_VERSION = 1


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
class TrialState:
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


def fraction_str(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def check_length(value: int | Fraction) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | Fraction) or value <= 0:
        raise ConfigError("searcher.max_length", shown(value), "a positive length")
    return Fraction(value)


class Searcher(ABC):
    """Decides which trials run, with which hyperparameters, and how long.

    Subclasses say which hyperparameters a new trial gets (``_new_hparams``) and, for
    adaptive searchers, which trial to promote (``_promotion``); the bookkeeping is shared.

    Examples
    --------
    >>> from detflow._search.searchers import SingleSearcher
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
        self.max_length = check_length(max_length)
        self.rung_lengths: tuple[Fraction, ...] = (self.max_length,)
        #: The swept keys in search order (the space's), saved for readers of the state.
        self.keys: tuple[str, ...] = ()
        self._trials: list[TrialState] = []
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
            "rung_lengths": [fraction_str(length) for length in self.rung_lengths],
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

    def _recorded(self, trial: TrialState, rung: int) -> None:
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

    def news(self, length_text: Callable[[Fraction], str]) -> list[str]:
        """What the search learned from the results told since the last call, one line each,
        lengths written by ``length_text`` (none by default; a loaded state counts as told).
        """
        return []

    def planned_hparams(self) -> list[dict[str, Any]]:
        """Hyperparameters of every new trial this searcher would create, in order.

        >>> from detflow._search.searchers import GridSearcher
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
            self._trials.append(TrialState(job.trial_id, dict(job.hparams), rung=job.rung))
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

    def _status(self, trial: TrialState, done: bool) -> TrialStatus:
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

    def _best_of(self, trial: TrialState) -> float | None:
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

        def key(trial: TrialState) -> tuple[int, float, int]:
            best = self._best_of(trial)
            assert best is not None  # it has metrics
            return rank_key(max(trial.metrics), best, trial.trial_id, self.smaller_is_better)

        best_id = min(candidates, key=key).trial_id
        return self.trials()[best_id]

    def state_dict(self) -> dict[str, Any]:
        """The searcher's state as JSON-ready data (Fractions as ``"num/den"`` strings)."""
        return {
            "version": STATE_VERSION,
            "settings": self._settings(),
            "trials": [
                {
                    "trial_id": t.trial_id,
                    "hparams": t.hparams,
                    "rung": t.rung,
                    "metrics": [[rung, m] for rung, m in sorted(t.metrics.items())],
                    "length_trained": fraction_str(t.length_trained),
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
        if state.get("version") != STATE_VERSION or state.get("settings") != self._settings():
            raise ValueError(
                "the saved search state does not match this searcher: "
                f"saved {state.get('settings')}, now {self._settings()}"
            )
        self._trials = [
            TrialState(
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
