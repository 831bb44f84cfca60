"""Population-based training (Jaderberg et al. 2017), synchronous generations.

A population of ``population_size`` trials trains in generations of ``perturb_every``
(a length in ``max_length``'s unit) up to ``max_length``. Generation ``g`` trains every member
to ``(g + 1) * perturb_every``: its jobs are this searcher's rungs. Once every member has
reported ``searcher.metric`` at the end of a generation (or failed), the bottom
``truncation_fraction`` of the population (failed members first, then the worst by metric)
is replaced: each gets a *child* of a trial drawn from the top ``truncation_fraction``
(exploit), a new trial that starts from its parent's checkpoint with the parent's
hyperparameters perturbed (explore: numbers times ``1 - perturb_factor`` or ``1 +
perturb_factor``, clamped to the dimension's bounds, integers rounded, log dimensions alike;
a choice resampled with ``resample_probability``). The other members continue from their own
checkpoints, as an ASHA promotion does. The driver copies a child's first checkpoint from its
parent (:meth:`PbtSearcher.parent_of`) before the child starts.

Generations are synchronous (no member starts generation ``g + 1`` before all have ended
``g``): a search with the same seed makes the same decisions whatever order results come in,
and a resumed search makes the ones it would have made. The names follow Determined's PBT
(``population_size``, ``replace_function.truncate_fraction`` as ``truncation_fraction``,
``explore_function.resample_probability`` and ``perturb_factor``).

Examples
--------
>>> from detflow._search.space import Interval
>>> searcher = PbtSearcher({"lr": Interval(0.01, 1.0)}, max_length=4, population_size=4,
...                        perturb_every=2, seed=0)
>>> searcher.rung_lengths
(Fraction(2, 1), Fraction(4, 1))
>>> for job in [searcher.ask() for _ in range(4)]:
...     searcher.tell(job.trial_id, metric=float(job.trial_id), length=job.length)
>>> child = searcher.ask()  # trial 3, the worst, makes way for a child of trial 0, the best
>>> child.trial_id, child.promotion, searcher.parent_of(child.trial_id), child.length
(4, False, 0, Fraction(4, 1))
>>> [(job.trial_id, job.promotion) for job in [searcher.ask() for _ in range(3)]]
[(0, True), (1, True), (2, True)]
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from detflow._core.artifacts import TrialStatus
from detflow._core.counts import check_count
from detflow._core.errors import ConfigError
from detflow._core.experiment import PbtSettings
from detflow._core.schema import SearcherConfig
from detflow._core.text import shown
from detflow._search.searcher import Job, Searcher, TrialState
from detflow._search.space import Choice, Interval, Space, sample

__all__ = ["PbtSearcher", "explore", "generations", "make_pbt"]

_DEFAULTS = SearcherConfig()  # the schema is the one table of defaults


def generations(max_length: int | Fraction, perturb_every: int | Fraction) -> int:
    """How many generations of ``perturb_every`` make ``max_length``: a whole number, or a
    :class:`ConfigError` naming ``searcher.perturb_every``.

    >>> generations(6, 2), generations(1, Fraction(1, 4))
    (3, 4)
    >>> generations(5, 2)
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: searcher.perturb_every = 2 is not valid: expected a \
length that divides searcher.max_length (5) into whole generations, not 2.5 of them
    """
    every = Fraction(perturb_every) if isinstance(perturb_every, int | Fraction) else None
    if isinstance(perturb_every, bool) or every is None or every <= 0:
        raise ConfigError("searcher.perturb_every", shown(perturb_every), "a positive length")
    count = Fraction(max_length) / every
    if count.denominator != 1:
        total = Fraction(max_length)
        raise ConfigError(
            "searcher.perturb_every",
            shown(perturb_every),
            f"a length that divides searcher.max_length ({total}) into whole generations, "
            f"not {float(count):.4g} of them",
        )
    return count.numerator


def _fraction(key: str, value: Any, low: float, high: float, *, open_low: bool) -> float:
    """``value`` as a float in ``(low, high]`` (``open_low``) or ``[low, high]``."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if numeric else None
    if number is None or not (low < number if open_low else low <= number) or number > high:
        bracket = "(" if open_low else "["
        raise ConfigError(key, shown(value), f"a number in {bracket}{low}, {high}]")
    return number


def explore(
    hparams: dict[str, Any],
    space: Space,
    rng: random.Random,
    *,
    perturb_factor: float = _DEFAULTS.perturb_factor,
    resample_probability: float = _DEFAULTS.resample_probability,
) -> dict[str, Any]:
    """PBT's explore step: ``hparams`` perturbed, key by key in sorted order.

    An :class:`Interval`'s value is multiplied by ``1 - perturb_factor`` or ``1 +
    perturb_factor`` (equally likely), clamped to ``[low, high]``, rounded for an integer
    interval (a log interval is perturbed the same way); a :class:`Choice` is drawn again
    from its values with ``resample_probability`` (it may draw the same), else kept.

    >>> space = {"lr": Interval(0.01, 0.1), "n": Interval(1, 10, integer=True)}
    >>> explore({"lr": 0.05, "n": 10}, space, random.Random(1))
    {'lr': 0.04000000000000001, 'n': 8}
    """
    out = dict(hparams)
    for key in sorted(space):
        dim = space[key]
        if isinstance(dim, Choice):
            if rng.random() < resample_probability:
                out[key] = rng.choice(dim.values)
            continue
        factor = rng.choice((1.0 - perturb_factor, 1.0 + perturb_factor))
        out[key] = _clamped(dim, hparams[key] * factor)
    return out


def _clamped(dim: Interval, value: float) -> Any:
    if dim.integer:
        return min(max(round(value), math.ceil(dim.low)), math.floor(dim.high))
    return min(max(value, dim.low), dim.high)


@dataclass(frozen=True)
class _Planned:
    """A job of the next generation: a member continuing (``trial_id``) or a new child of
    ``parent`` with ``hparams`` (``trial_id`` None: it gets the next id when asked)."""

    slot: int
    trial_id: int | None
    parent: int | None
    hparams: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "trial_id": self.trial_id,
            "parent": self.parent,
            "hparams": self.hparams,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Planned:
        trial_id, parent = data["trial_id"], data["parent"]
        return cls(
            int(data["slot"]),
            None if trial_id is None else int(trial_id),
            None if parent is None else int(parent),
            dict(data["hparams"]),
        )


class PbtSearcher(Searcher):
    """``searcher.name: pbt``: see the module's docstring.

    Rung ``g`` is generation ``g`` (length ``(g + 1) * perturb_every``). Generation 0 draws
    member ``i`` from ``Random(f"{seed}:{i}")``, as random search does; at the end of
    generation ``g`` the choices draw from ``Random(f"{seed}:pbt:{g}:{slot}")``: the parent
    among the top trials, then :func:`explore`. Each generation's children are asked before
    the members that continue, so a child copies its parent's checkpoint before the parent
    trains on. A replaced trial is STOPPED_EARLY; a member that ended the last generation
    COMPLETED. When every member failed, nothing is left to copy and the search ends.

    Examples
    --------
    >>> from detflow._search.space import Choice
    >>> searcher = PbtSearcher({"act": Choice(("relu", "tanh"))}, 3, population_size=2,
    ...                        perturb_every=1, truncation_fraction=0.5)
    >>> len(searcher.rung_lengths), [searcher.ask().trial_id for _ in range(2)]
    (3, [0, 1])
    """

    def __init__(
        self,
        space: Space,
        max_length: int | Fraction,
        *,
        population_size: int,
        perturb_every: int | Fraction,
        truncation_fraction: float = _DEFAULTS.truncation_fraction,
        resample_probability: float = _DEFAULTS.resample_probability,
        perturb_factor: float = _DEFAULTS.perturb_factor,
        seed: int = 0,
        metric: str = _DEFAULTS.metric,
        smaller_is_better: bool = True,
    ) -> None:
        super().__init__(max_length, metric=metric, smaller_is_better=smaller_is_better)
        self.space = dict(space)
        self.keys = tuple(space)
        self.seed = seed
        self.population_size = check_count("searcher.population_size", population_size, 2)
        count = generations(self.max_length, perturb_every)
        self.perturb_every = Fraction(perturb_every)
        self.rung_lengths = tuple(self.perturb_every * (g + 1) for g in range(count))
        self.truncation_fraction = _fraction(
            "searcher.truncation_fraction", truncation_fraction, 0.0, 0.5, open_low=True
        )
        #: members replaced at each generation's end
        self.replaced_per_generation = math.floor(self.population_size * self.truncation_fraction)
        if self.replaced_per_generation < 1:
            raise ConfigError(
                "searcher.truncation_fraction",
                shown(truncation_fraction),
                f"a fraction of searcher.population_size ({self.population_size}) that is at "
                f"least one trial: at least {1 / self.population_size:.4g}, at most 0.5",
            )
        self.resample_probability = _fraction(
            "searcher.resample_probability", resample_probability, 0.0, 1.0, open_low=False
        )
        self.perturb_factor = _fraction(
            "searcher.perturb_factor", perturb_factor, 0.0, 0.99, open_low=True
        )
        self._members: list[int] = []  # slot -> the trial now in it
        self._parents: dict[int, int] = {}  # child trial id -> the trial it copied
        self._start_rungs: list[int] = []  # trial id -> the rung its first job trained to
        self._replaced: set[int] = set()  # trials a child took the place of
        self._queue: list[_Planned] = [
            _Planned(slot, None, None, hparams)
            for slot, hparams in enumerate(self.planned_hparams())
        ]

    # -- what a new trial of generation 0 gets (planned_hparams, the sweeper's validation) ---
    def _new_hparams(self, trial_id: int) -> dict[str, Any] | None:
        if trial_id >= self.population_size:
            return None
        return sample(self.space, random.Random(f"{self.seed}:{trial_id}"))

    @property
    def generation(self) -> int:
        """The generation the population trains (or last trained) now: its rung."""
        return self._trials[self._members[0]].rung if self._members else 0

    def parent_of(self, trial_id: int) -> int | None:
        """The trial whose checkpoint ``trial_id`` started from; None for generation 0.

        >>> PbtSearcher({}, 2, population_size=2, perturb_every=1,
        ...             truncation_fraction=0.5).parent_of(0) is None
        True
        """
        return self._parents.get(trial_id)

    def _start_rung(self, trial_id: int) -> int:
        return self._start_rungs[trial_id]

    def _next_job(self) -> Job | None:
        if not self._queue:
            return None
        head = self._queue[0]
        if head.trial_id is None:  # a new trial: generation 0's, or a child
            rung = 0 if head.parent is None else self._trials[head.parent].rung + 1
            return Job(len(self._trials), dict(head.hparams), self.rung_lengths[rung], rung, False)
        rung = self._trials[head.trial_id].rung + 1
        return Job(head.trial_id, dict(head.hparams), self.rung_lengths[rung], rung, True)

    def ask(self) -> Job | None:
        """The next job of the current generation; None while it is still training, and at
        the end. A child's job is not a promotion: it is a new trial, whose first checkpoint
        the driver copies from :meth:`parent_of`."""
        job = super().ask()
        if job is None:
            return None
        head = self._queue.pop(0)
        if not job.promotion:
            self._start_rungs.append(job.rung)
            if head.parent is not None:
                self._parents[job.trial_id] = head.parent
            if head.slot < len(self._members):
                self._replaced.add(self._members[head.slot])
                self._members[head.slot] = job.trial_id
            else:
                self._members.append(job.trial_id)
        return job

    def tell(
        self,
        trial_id: int,
        metric: float | None,
        length: int | Fraction,
        error: str | None = None,
        best: float | None = None,
    ) -> None:
        """:meth:`Searcher.tell`; the last member of a generation to end plans the next."""
        super().tell(trial_id, metric, length, error=error, best=best)
        if not self._queue and not self._in_flight:
            self._queue = self._plan_next()

    def _plan_next(self) -> list[_Planned]:
        """The next generation's jobs: children of top trials in the bottom's slots, then the
        other members continuing; none after the last generation or when all failed."""
        generation = self.generation
        if generation + 1 >= len(self.rung_lengths) or len(self._members) < self.population_size:
            return []
        trials = [self._trials[t] for t in self._members]
        ok = [t for t in trials if t.error is None and generation in t.metrics]
        if not ok:
            return []
        ok.sort(key=lambda t: (self._score(t.metrics[generation]), t.trial_id))
        n = self.replaced_per_generation
        top = [t.trial_id for t in ok[:n]]
        worst_first = [t.trial_id for t in trials if t not in ok] + [t.trial_id for t in ok[::-1]]
        out = set(worst_first[:n]) | {t.trial_id for t in trials if t not in ok}
        out -= set(top)
        children: list[_Planned] = []
        staying: list[_Planned] = []
        for slot, member in enumerate(self._members):
            if member in out:
                rng = random.Random(f"{self.seed}:pbt:{generation}:{slot}")
                parent = rng.choice(top)
                hparams = explore(
                    self._trials[parent].hparams,
                    self.space,
                    rng,
                    perturb_factor=self.perturb_factor,
                    resample_probability=self.resample_probability,
                )
                children.append(_Planned(slot, None, parent, hparams))
            else:
                staying.append(_Planned(slot, member, None, dict(self._trials[member].hparams)))
        return children + staying

    def _status(self, trial: TrialState, done: bool) -> TrialStatus:
        if trial.trial_id in self._replaced and trial.error is None:
            return TrialStatus.STOPPED_EARLY
        return super()._status(trial, done)

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "seed": self.seed,
            "population_size": self.population_size,
            "truncation_fraction": self.truncation_fraction,
            "resample_probability": self.resample_probability,
            "perturb_factor": self.perturb_factor,
        }

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Searcher.state_dict` and the population: its members, each trial's parent
        and first rung, the replaced trials and the jobs of the generation not yet asked."""
        return {
            **super().state_dict(),
            "pbt": {
                "members": list(self._members),
                "parents": [[child, parent] for child, parent in sorted(self._parents.items())],
                "start_rungs": list(self._start_rungs),
                "replaced": sorted(self._replaced),
                "queue": [planned.to_json() for planned in self._queue],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("pbt")
        if not isinstance(saved, dict):
            super().load_state_dict(state)  # refuses another searcher's state, naming it
            raise ValueError("the saved search state has no population (pbt)")
        start_rungs = [int(r) for r in saved["start_rungs"]]
        if len(start_rungs) != len(state.get("trials") or []):
            raise ValueError("the saved search state does not say where each trial started")
        previous = self._start_rungs
        self._start_rungs = start_rungs
        try:
            super().load_state_dict(state)
        except Exception:
            self._start_rungs = previous
            raise
        known = range(len(self._trials))
        members = [int(t) for t in saved["members"]]
        parents = {int(child): int(parent) for child, parent in saved["parents"]}
        if not all(t in known for t in [*members, *parents, *parents.values()]):
            raise ValueError(f"the saved population names trials this search lacks: {members}")
        self._members = members
        self._parents = parents
        self._replaced = {int(t) for t in saved["replaced"]}
        self._queue = [_Planned.from_json(p) for p in saved["queue"]]


def make_pbt(
    space: Space,
    max_length: int | Fraction,
    settings: PbtSettings | None,
    *,
    seed: int,
    metric: str,
    smaller_is_better: bool,
) -> PbtSearcher:
    """The :class:`PbtSearcher` of ``searcher.*`` (``settings``: None when
    ``searcher.population_size`` and ``searcher.perturb_every`` were not given, an error
    naming the first).

    >>> from detflow._core.units import Length, Unit
    >>> make_pbt({}, 4, PbtSettings(4, Length(1, Unit.EPOCHS)), seed=0, metric="loss",
    ...          smaller_is_better=True).rung_lengths[-1]
    Fraction(4, 1)
    >>> make_pbt({}, 4, None, seed=0, metric="loss", smaller_is_better=True)
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: searcher.population_size = None is not valid: expected \
a value: it is required and missing (searcher.name=pbt)
    """
    if settings is None:
        required = "a value: it is required and missing (searcher.name=pbt)"
        raise ConfigError("searcher.population_size", None, required)
    return PbtSearcher(
        space,
        max_length,
        population_size=settings.population_size,
        perturb_every=settings.perturb_every.value,
        truncation_fraction=settings.truncation_fraction,
        resample_probability=settings.resample_probability,
        perturb_factor=settings.perturb_factor,
        seed=seed,
        metric=metric,
        smaller_is_better=smaller_is_better,
    )
