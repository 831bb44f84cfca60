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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from detflow._core.counts import check_count
from detflow._core.errors import ConfigError
from detflow._core.experiment import (
    MAX_RUNGS,
    SAMPLERS,
    SEARCHER_ALIASES,
    SEARCHER_NAMES,
    PbtSettings,
    rung_defaults,
)
from detflow._core.schema import SearcherConfig
from detflow._core.text import shown
from detflow._search.pbt import make_pbt
from detflow._search.rungs import RungLadder, win_rate
from detflow._search.searcher import (
    STATE_VERSION,
    Job,
    Searcher,
    TrialRecord,
    TrialState,
    rank_key,
    trial_status,
)
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
    "top_rung_gate",
    "top_rung_results",
    "trial_status",
]

_DEFAULTS = SearcherConfig()  # the schema is the one table of defaults
_ASHA, _ADAPTIVE, _BOHB = (rung_defaults(n) for n in ("asha", "adaptive_asha", "bohb"))


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


def top_rung_results(divisor: int) -> int:
    """How many results the rung below the top holds before it promotes a trial to
    ``max_length``, while new trials can still start: ``divisor**2``, so that the trials
    trained to full length are the top ``1/divisor`` of at least that many, not the best of
    the first ``divisor`` (measured on lcbench: bench/README.md).

    >>> top_rung_results(3)
    9
    """
    return divisor**2


def top_rung_gate(divisor: int, rungs: int, can_start: bool) -> dict[int, int]:
    """The results each rung must hold before it promotes (``RungLadder.promotable``'s
    ``least``): :func:`top_rung_results` at the rung below the top while new trials can
    start; nothing once none can (ASHA's own rule: a search always finishes).

    >>> top_rung_gate(divisor=3, rungs=4, can_start=True), top_rung_gate(3, 4, can_start=False)
    ({2: 9}, {})
    """
    if rungs < 2 or not can_start:
        return {}
    return {rungs - 2: top_rung_results(divisor)}


class AshaSearcher(RandomSearcher):
    """Asynchronous successive halving (Li et al., MLSys 2020), promotion-based.

    Whenever asked, it promotes, from the second-highest rung down, a trial that is among the
    top ``floor(n / divisor)`` of the ``n`` results of its rung and not yet promoted; else it
    starts a new trial at rung 0 while fewer than ``max_trials`` exist. While new trials can
    start, the rung below the top promotes to ``max_length`` only once it holds
    ``divisor**2`` results (:func:`top_rung_gate`). Rung lengths come from
    :func:`asha_rungs`. Each rung's results are kept sorted (a
    :class:`~detflow._search.rungs.RungLadder`): a promotion costs O(log n), not a sort of
    every rung.

    A new trial's hyperparameters are drawn from ``Random(f"{seed}:{i}")`` (``sampler``
    ``random``), or (``tpe``) proposed by a density model fitted on the highest rung with
    results enough, never one shorter than ``max_length / divisor**2`` nor the bottom one
    (:meth:`_model_floor`; :mod:`detflow._search.tpe`),
    a share ``random_fraction`` of them still at random.

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
        divisor: int = _ASHA.divisor,
        max_rungs: int = _ASHA.max_rungs,
        min_length: int | Fraction | None = None,
        sampler: str = _ASHA.sampler,
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

    def _recorded(self, trial: TrialState, rung: int) -> None:
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
        rungs = len(self.rung_lengths)
        gate = top_rung_gate(self.divisor, rungs, len(self._trials) < self.max_trials)
        return self._ladder.promotable(0, range(rungs - 2, -1, -1), self.divisor, gate)

    def _model_floor(self) -> int:
        """The lowest rung the model may be fitted on: the lowest from the second up that is
        at least ``max_length / divisor**2`` long (the bottom one if it is the only rung).
        Shorter rungs' results are the cheapest and, measured, bias the proposals towards
        configurations that only start well: the bottom rung on lcbench, the two lowest of
        adaptive_asha's five on MFHartmann6 ``terrible`` (bench/README.md).

        >>> s = make_searcher("adaptive_asha", space={}, max_length=100, max_trials=100, seed=0,
        ...                   metric="loss", smaller_is_better=True)
        >>> [round(float(length), 1) for length in s.rung_lengths], s._model_floor()
        ([1.2, 3.7, 11.1, 33.3, 100.0], 2)
        """
        lengths, least = self.rung_lengths, self.max_length / self.divisor**2
        floor = min(1, len(lengths) - 1)
        return next(r for r in range(floor, len(lengths)) if lengths[r] >= least)

    def _model_rung(self) -> int | None:
        """The rung the density model is fitted on: the highest from :meth:`_model_floor` up
        with results enough."""
        least = min_observations(self.space, self.tpe)
        for rung in range(len(self.rung_lengths) - 1, self._model_floor() - 1, -1):
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

    def _model_point(self, trial_id: int) -> dict[str, Any] | None:
        """New trial ``trial_id``'s hyperparameters from the density model, or None where
        they are drawn at random (sampler ``random``, the random share, too few results)."""
        if self.sampler != "tpe" or self._peeking:
            return None
        model = self.density_model()
        if model is None:
            return None
        return propose(model, random.Random(f"{self.seed}:{trial_id}:tpe"))

    def _new_hparams(self, trial_id: int) -> dict[str, Any] | None:
        if trial_id >= self.max_trials:
            return None
        point = self._model_point(trial_id)
        return point if point is not None else super()._new_hparams(trial_id)

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
        settings = {
            **super()._settings(),
            "divisor": self.divisor,
            "top_rung_results": top_rung_results(self.divisor),  # states saved before differ
        }
        if self.sampler != "random":  # states saved before samplers existed still load
            settings.update(sampler=self.sampler, random_fraction=self.tpe.random_fraction)
        return settings


@dataclass(frozen=True)
class RungTrust:
    """What :class:`BohbSearcher` learned of one rung: at the next rung (``compared_at``), how
    often one of the ``promoted`` trials (selected at ``rung`` or below) beats one of the
    ``direct`` trials that started there unselected (``win_rate``, 0.5 when selecting by the
    rung does no better than not selecting at all), and so whether the rung is ``useful``.

    >>> RungTrust(rung=0, compared_at=1, promoted=6, direct=6, win_rate=0.5, useful=False).useful
    False
    """

    rung: int
    compared_at: int
    promoted: int
    direct: int
    win_rate: float
    useful: bool


class BohbSearcher(AshaSearcher):
    """BOHB (Falkner et al., ICML 2018) on ASHA's promotions: new trials' hyperparameters from
    the TPE density model (:mod:`detflow._search.tpe`, ``random_fraction`` of them at random),
    promotions as :class:`AshaSearcher`'s, and a test of each short rung before it is trusted.

    A short rung is only worth its results if the trials it selects are better at the next
    rung than trials it never judged: on lcbench, 1 epoch's accuracy of 52 selects no better
    than chance on most tasks and worse on some (``bench/README.md``). So while the rung new
    trials start at (:meth:`start_rung`, ``s``) is untested, one new trial in
    :meth:`hedge_every` starts one rung higher, at ``s + 1``, unselected and drawn at random
    (a hedge, as a Hyperband bracket that starts there), until :attr:`MIN_HEDGED` have. Once
    rung ``s + 1`` holds the results of the first :attr:`MIN_HEDGED` trials (by trial id) of
    each kind drawn at random, promoted there from ``s`` and started there, the rung is
    tested (:meth:`rung_trust`). Only random draws are compared: a trial the model proposed
    is better wherever it started, and would make the rung look as good or as bad as when
    its trials were drawn. The rung is useful when the promoted trials beat the direct ones
    by the Mann-Whitney ``win_rate`` more than one standard error above 0.5
    (``sqrt((n + m + 1) / (12 n m))``: above 0.65 with 8 and 8). A rung that is not useful is
    skipped: new trials start above it, and the next rung is tested the same way (never the
    top: a hedge there would be a full-length trial). Each decision is told once by
    :meth:`news`.
    The model is fitted on the highest rung with results enough at or above the start rung and
    above the bottom rung (:meth:`AshaSearcher._model_rung`), from
    ``TpeSettings.min_good`` = :attr:`MIN_GOOD` good results and 2 bad on: BOHB's own rule
    (``n_dims + 1`` of each) waits, on lcbench's 7 dimensions, for 16 results at 6 epochs,
    about as long as an ASHA search needs to reach random search's final regret.

    Everything decided here is a function of the results told, of each trial's start rung
    and of whether it was drawn at random (both in the state), so a resumed search decides
    the same.

    Examples
    --------
    >>> from detflow._search.space import Interval
    >>> searcher = BohbSearcher({"x": Interval(0.0, 1.0)}, max_length=9, max_trials=400,
    ...                         divisor=3, max_rungs=3)
    >>> searcher.rung_lengths, searcher.start_rung(), searcher.hedge_every()
    ((Fraction(1, 1), Fraction(3, 1), Fraction(9, 1)), 0, 12)
    >>> [searcher.ask().rung for _ in range(13)]  # the twelfth trial hedges at rung 1
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    """

    #: Trials of each kind (promoted, direct) a rung is tested on (8: bench/README.md).
    MIN_HEDGED = 8
    #: One new trial in this many hedges while the start rung is untested, where
    #: ``max_trials`` allows (:meth:`hedge_every`; bench/README.md).
    HEDGE_EVERY = 12
    #: The fewest good results the density model is fitted on (bench/README.md).
    MIN_GOOD = 3

    def __init__(
        self,
        space: Space,
        max_length: int | Fraction,
        max_trials: int,
        *,
        divisor: int = _BOHB.divisor,
        max_rungs: int = _BOHB.max_rungs,
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
        self.tpe = TpeSettings(random_fraction=random_fraction, min_good=self.MIN_GOOD)
        self._start_of: list[int] = []  # trial id -> the rung it started at
        self._random_draws: list[bool] = []  # trial id -> whether drawn at random
        self._drawn_at_random = True  # whether the last new trial's hparams were
        self._started_at = [0] * len(self.rung_lengths)  # trials started per rung
        self._trust: tuple[int, list[RungTrust]] | None = None  # (results told, trust)
        self._reported = 0  # rung tests told of by news()

    def _test(self, rung: int) -> RungTrust | None:
        """``rung`` tested at the next one: its first :attr:`MIN_HEDGED` promoted trials drawn
        at random against the first as many that started there (None: too few results yet)."""
        promoted: list[tuple[int, float]] = []
        direct: list[tuple[int, float]] = []
        for score, trial_id in self._ladder.rung(0, rung + 1).ranked():
            if not self._random_draws[trial_id]:
                continue  # proposed by a model: better wherever it started
            start = self._start_of[trial_id]
            if start <= rung:
                promoted.append((trial_id, score))
            elif start == rung + 1:
                direct.append((trial_id, score))
        k = self.MIN_HEDGED
        if min(len(promoted), len(direct)) < k:
            return None
        rate = win_rate([s for _, s in sorted(promoted)[:k]], [s for _, s in sorted(direct)[:k]])
        n = m = k
        useful = rate - math.sqrt((n + m + 1) / (12 * n * m)) > 0.5
        return RungTrust(rung, rung + 1, n, m, rate, useful)

    def rung_trust(self) -> list[RungTrust]:
        """The tests of the rungs so far, bottom up: each rung that was skipped, then the one
        new trials start at if it was tested (see the class docstring)."""
        if self._trust is not None and self._trust[0] == self._told:
            return self._trust[1]
        found = []
        top = len(self.rung_lengths) - 1
        for rung in range(top - 1):  # rung + 1 < top: hedges never train to max_length
            trust = self._test(rung)
            if trust is None:
                break
            found.append(trust)
            if trust.useful:
                break
        self._trust = (self._told, found)
        return found

    def start_rung(self) -> int:
        """The rung new trials start at now: the lowest not found useless."""
        return sum(1 for t in self.rung_trust() if not t.useful)

    def news(self, length_text: Callable[[Fraction], str]) -> list[str]:
        """A line for each rung test decided since the last call.

        >>> from detflow._search.space import Interval
        >>> searcher = BohbSearcher({"x": Interval(0.0, 1.0)}, 9, 30, divisor=3, max_rungs=3)
        >>> searcher._trust = (0, [RungTrust(0, 1, 8, 8, 0.55, useful=False)])
        >>> searcher.news(lambda length: f"{length} epochs")
        ['bohb: the trials rung 0 (1 epochs) selected beat those it never judged in 55% of \
pairs at 3 epochs (8 + 8 trials): not better than chance, so new trials start at 3 epochs']
        """
        trust = self.rung_trust()
        lines = []
        for test in trust[self._reported :]:
            verdict = (
                "so new trials keep starting there"
                if test.useful
                else "not better than chance, so new trials start at "
                + length_text(self.rung_lengths[test.rung + 1])
            )
            lines.append(
                f"bohb: the trials rung {test.rung} ({length_text(self.rung_lengths[test.rung])})"
                f" selected beat those it never judged in {test.win_rate:.0%} of pairs at "
                f"{length_text(self.rung_lengths[test.compared_at])} ({test.promoted} + "
                f"{test.direct} trials): {verdict}"
            )
        self._reported = max(self._reported, len(trust))
        return lines

    def _hedging(self, start: int) -> bool:
        """Whether the next new trial starts one rung above ``start``, unselected: while the
        rung ``start`` is untested, one new trial in :meth:`hedge_every`, :attr:`MIN_HEDGED`
        at most."""
        trust = self.rung_trust()
        tested = bool(trust) and trust[-1].rung == start
        hedged = self._started_at[start + 1] if start + 1 < len(self._started_at) else 0
        return (
            start + 2 < len(self.rung_lengths)
            and not tested
            and hedged < self.MIN_HEDGED
            and (hedged + 1) * self.hedge_every() <= self._started_at[start] + 1
        )

    def hedge_every(self) -> int:
        """One new trial in how many hedges: :attr:`HEDGE_EVERY`, or fewer where
        ``max_trials`` is too few for the :attr:`MIN_HEDGED` hedges to be drawn in the first
        quarter of the trials (so that the test decides while most remain), never fewer than
        ``divisor``.

        >>> from detflow._search.space import Interval
        >>> space = {"x": Interval(0.0, 1.0)}
        >>> [BohbSearcher(space, 9, n, divisor=3).hedge_every() for n in (81, 200, 10_000)]
        [3, 6, 12]
        """
        fits = self.max_trials // (4 * self.MIN_HEDGED)
        return max(self.divisor, min(self.HEDGE_EVERY, fits))

    def _new_trial_rung(self) -> int:
        start = self.start_rung()
        return start + 1 if self._hedging(start) else start

    def _start_rung(self, trial_id: int) -> int:
        return self._start_of[trial_id]

    def _model_floor(self) -> int:
        return max(super()._model_floor(), self.start_rung())

    def _model_point(self, trial_id: int) -> dict[str, Any] | None:
        # A hedge is a control of the rung test, drawn at random as the trials it is
        # compared with.
        hedge = not self._peeking and self._hedging(self.start_rung())
        point = None if hedge else super()._model_point(trial_id)
        self._drawn_at_random = point is None
        return point

    def ask(self) -> Job | None:
        job = super().ask()
        if job is not None and not job.promotion:
            self._start_of.append(job.rung)
            self._started_at[job.rung] += 1
            self._random_draws.append(self._drawn_at_random)
        return job

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "min_hedged": self.MIN_HEDGED,
            "hedge_every": self.HEDGE_EVERY,  # not hedge_every(): max_trials may grow
            "min_good": self.MIN_GOOD,
        }

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Searcher.state_dict`, each trial's start rung and whether it was drawn at
        random by trial id, and (to read, never loaded) what the search learned of its rungs."""
        return {
            **super().state_dict(),
            "start_rungs": list(self._start_of),
            "random_draws": list(self._random_draws),
            "rung_trust": [
                {
                    "rung": t.rung,
                    "compared_at": t.compared_at,
                    "promoted": t.promoted,
                    "direct": t.direct,
                    "win_rate": t.win_rate,
                    "useful": t.useful,
                }
                for t in self.rung_trust()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION or state.get("settings") != self._settings():
            super().load_state_dict(state)  # refuses it, naming both settings
        starts = state.get("start_rungs")
        if not isinstance(starts, list) or len(starts) != len(state.get("trials") or []):
            raise ValueError("the saved search state does not say each trial's start rung")
        top = len(self.rung_lengths) - 1
        if not all(isinstance(r, int) and 0 <= r <= top for r in starts):
            raise ValueError(f"the saved search state names rungs this search lacks: {starts}")
        draws = state.get("random_draws")
        if not isinstance(draws, list) or len(draws) != len(starts):
            raise ValueError("the saved search state does not say which trials were random draws")
        if not all(isinstance(d, bool) for d in draws):
            raise ValueError(f"the saved search state's random_draws are not true/false: {draws}")
        previous = self._start_of, self._random_draws
        self._start_of, self._random_draws = [int(r) for r in starts], list(draws)
        try:
            super().load_state_dict(state)
        except Exception:
            self._start_of, self._random_draws = previous
            raise
        self._started_at = [0] * len(self.rung_lengths)
        for rung in self._start_of:
            self._started_at[rung] += 1
        self._trust = None
        self._reported = len(self.rung_trust())  # told of before the state was saved


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
    divisor: int = _ADAPTIVE.divisor,
    max_rungs: int = _ADAPTIVE.max_rungs,
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

    >>> adaptive_brackets(937, 16, divisor=4, max_concurrent_trials=2)
    (Bracket(rungs=3, max_trials=12, max_concurrent_trials=1), \
Bracket(rungs=2, max_trials=4, max_concurrent_trials=1))
    >>> [b.max_trials for b in adaptive_brackets(10**6, 100, divisor=4, bracket_rungs=[2, 4, 3])]
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
    ``max_trials``, then bracket order). New trials are proposed as :class:`AshaSearcher`
    proposes them, whatever their bracket, by default (``sampler`` ``tpe``) from the density
    model fitted on every bracket's results; ``sampler: random`` draws trial ``i`` from
    ``Random(f"{seed}:{i}")``, as Determined's ``adaptive_asha`` does.

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
        divisor: int = _ADAPTIVE.divisor,
        max_rungs: int = _ADAPTIVE.max_rungs,
        bracket_rungs: Sequence[int] = (),
        max_concurrent_trials: int = _DEFAULTS.max_concurrent_trials,
        min_length: int | Fraction | None = None,
        sampler: str = _ADAPTIVE.sampler,
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
            can_start = started[b] < self.brackets[b].max_trials
            gate = top_rung_gate(self.divisor, top + 1, can_start)
            promoted = self._ladder.promotable(b, rungs, self.divisor, gate)
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
        if state.get("version") != STATE_VERSION or state.get("settings") != self._settings():
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
    divisor: int | None = None,
    max_rungs: int | None = None,
    mode: str = _DEFAULTS.mode,
    bracket_rungs: Sequence[int] = (),
    max_concurrent_trials: int = _DEFAULTS.max_concurrent_trials,
    steps_of: Callable[[Fraction], int] | None = None,
    pbt: PbtSettings | None = None,
    min_length: int | Fraction | None = None,
    sampler: str | None = None,
    random_fraction: float = _DEFAULTS.random_fraction,
) -> Searcher:
    """Build the searcher ``name`` (single, grid, random, asha, adaptive_asha, bohb or pbt) from
    ``searcher.*`` settings; Determined's older names (``adaptive``, ``adaptive_simple``,
    ``async_halving``) build the searcher that does what they did.

    ``single`` takes a space of one-value choices only (fixed hyperparameters); ``grid``
    ignores ``max_trials``; ``divisor`` / ``max_rungs`` left None are the searcher's own
    defaults (:func:`~detflow._core.experiment.rung_defaults`); ``min_length`` is for asha,
    adaptive_asha and bohb, ``sampler``
    for asha and adaptive_asha (bohb always proposes with its model). Every count is checked,
    whichever searcher uses it.

    Examples
    --------
    >>> make_searcher("asha", space={}, max_length=16, max_trials=8, seed=0,
    ...               metric="validation_loss", smaller_is_better=True).rung_lengths  # 3 and 4
    (Fraction(16, 27), Fraction(16, 9), Fraction(16, 3), Fraction(16, 1))
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
    if not isinstance(name, str):
        raise ConfigError("searcher.name", shown(name), f"one of {', '.join(SEARCHER_NAMES)}")
    name = SEARCHER_ALIASES.get(name, name)
    divisor = rung_defaults(name).divisor if divisor is None else divisor
    max_rungs = rung_defaults(name).max_rungs if max_rungs is None else max_rungs
    sampler = rung_defaults(name).sampler if sampler is None else sampler
    check_count("searcher.divisor", divisor, 2)
    check_count("searcher.max_rungs", max_rungs, 1, MAX_RUNGS)
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
        return make_pbt(space, max_length, pbt, seed=seed, **common)
    raise ConfigError("searcher.name", shown(name), f"one of {', '.join(SEARCHER_NAMES)}")
