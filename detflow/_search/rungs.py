"""ASHA's rungs as sorted structures: which trial to promote in O(log n) per ask.

ASHA promotes, from a rung of ``n`` results, a trial among the top ``n // divisor`` that has
not been promoted yet (and has not failed). A :class:`Rung` keeps its results sorted by
``(score, trial id)`` (score: the metric made smaller-is-better) and, separately, the sorted
results of the trials still waiting there. The best waiting trial is the only one that can be
promoted first: it is promotable exactly when fewer than ``n // divisor`` results rank before
it, one :func:`bisect.bisect_left`. Adding a result is one :func:`bisect.insort` in each list.

Pure Python: nothing here knows of trials, hyperparameters or lengths.

Examples
--------
>>> rung = Rung()
>>> for trial_id, score in enumerate([0.5, 0.2, 0.9, 0.4]):
...     rung.add(trial_id, score)
>>> rung.promotable(divisor=4)  # the top 4 // 4 = 1: trial 1
1
>>> rung.close(1)  # promoted: it waits here no more
>>> rung.promotable(divisor=4) is None
True
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Rung", "RungLadder", "win_rate"]


@dataclass
class Rung:
    """The results at one rung, and which of their trials still wait for a promotion.

    Examples
    --------
    >>> rung = Rung()
    >>> rung.add(7, 0.3); rung.add(3, 0.3)  # ties rank by trial id
    >>> rung.ranked()
    [(0.3, 3), (0.3, 7)]
    """

    _all: list[tuple[float, int]] = field(default_factory=list)  # (score, trial id), sorted
    _waiting: list[tuple[float, int]] = field(default_factory=list)  # those not promoted/failed
    _score_of: dict[int, float] = field(default_factory=dict)  # trial id -> its score here

    def __len__(self) -> int:
        return len(self._all)

    def add(self, trial_id: int, score: float, *, waiting: bool = True) -> None:
        """Record ``trial_id``'s ``score`` (smaller is better) here, replacing an earlier one;
        ``waiting``: it may still be promoted from here."""
        if trial_id in self._score_of:
            self._remove(trial_id)
        entry = (score, trial_id)
        self._score_of[trial_id] = score
        bisect.insort(self._all, entry)
        if waiting:
            bisect.insort(self._waiting, entry)

    def close(self, trial_id: int) -> None:
        """``trial_id`` was promoted from here or failed: it waits here no more (no-op if it
        was not waiting)."""
        score = self._score_of.get(trial_id)
        if score is None:
            return
        at = bisect.bisect_left(self._waiting, (score, trial_id))
        if at < len(self._waiting) and self._waiting[at] == (score, trial_id):
            del self._waiting[at]

    def _remove(self, trial_id: int) -> None:
        self.close(trial_id)
        entry = (self._score_of.pop(trial_id), trial_id)
        del self._all[bisect.bisect_left(self._all, entry)]

    def promotable(self, divisor: int) -> int | None:
        """The waiting trial ASHA promotes first from here, or None: the best waiting one, if
        it is among the top ``len(self) // divisor``."""
        if not self._waiting:
            return None
        best = self._waiting[0]
        return best[1] if bisect.bisect_left(self._all, best) < len(self._all) // divisor else None

    def ranked(self) -> list[tuple[float, int]]:
        """Every result here as ``(score, trial id)``, best first (a copy)."""
        return list(self._all)

    def score(self, trial_id: int) -> float | None:
        """``trial_id``'s score here, or None if it has none."""
        return self._score_of.get(trial_id)


@dataclass
class RungLadder:
    """One :class:`Rung` per rung index, in any number of independent groups (adaptive_asha's
    brackets; plain ASHA uses group 0).

    Examples
    --------
    >>> ladder = RungLadder(rungs=2)
    >>> ladder.add(group=0, rung=0, trial_id=0, score=1.0)
    >>> ladder.add(group=0, rung=0, trial_id=1, score=0.5)
    >>> ladder.promotable(group=0, rungs=[0], divisor=2)
    1
    """

    rungs: int
    _groups: dict[int, list[Rung]] = field(default_factory=dict)

    def rung(self, group: int, rung: int) -> Rung:
        """Group ``group``'s rung ``rung`` (made empty on first use)."""
        if group not in self._groups:
            self._groups[group] = [Rung() for _ in range(self.rungs)]
        return self._groups[group][rung]

    def add(self, group: int, rung: int, trial_id: int, score: float, waiting: bool = True) -> None:
        """Record a result: see :meth:`Rung.add`."""
        self.rung(group, rung).add(trial_id, score, waiting=waiting)

    def close(self, group: int, rung: int, trial_id: int) -> None:
        """``trial_id`` no longer waits at ``rung``: see :meth:`Rung.close`."""
        self.rung(group, rung).close(trial_id)

    def promotable(
        self,
        group: int,
        rungs: list[int] | range,
        divisor: int,
        least: Mapping[int, int] | None = None,
    ) -> int | None:
        """The first of ``rungs`` (in the order given) with a promotable trial: that trial. A
        rung in ``least`` promotes nothing before it holds that many results.

        >>> ladder = RungLadder(rungs=2)
        >>> for trial_id, score in enumerate([0.5, 0.7, 0.9]):
        ...     ladder.add(group=0, rung=0, trial_id=trial_id, score=score)
        >>> ladder.promotable(0, [0], divisor=3), ladder.promotable(0, [0], 3, least={0: 9})
        (0, None)
        """
        for rung in rungs:
            here = self.rung(group, rung)
            if least and len(here) < least.get(rung, 0):
                continue
            found = here.promotable(divisor)
            if found is not None:
                return found
        return None

    def ranked(self, rung: int) -> list[tuple[float, int]]:
        """Every group's results at ``rung``, best first."""
        merged: list[tuple[float, int]] = []
        for rungs in self._groups.values():
            merged.extend(rungs[rung].ranked())
        merged.sort()
        return merged

    def count(self, rung: int) -> int:
        """How many results ``rung`` holds over all groups."""
        return sum(len(rungs[rung]) for rungs in self._groups.values())


def win_rate(scores: Sequence[float], others: Sequence[float]) -> float:
    """How often a score of ``scores`` is better (smaller) than one of ``others``, over every
    pair (ties count a half): the Mann-Whitney statistic ``U / (n * m)``; 0.5 if either is empty.

    >>> win_rate([1.0, 2.0], [3.0, 4.0]), win_rate([1.0, 4.0], [2.0, 3.0]), win_rate([1.0], [1.0])
    (1.0, 0.5, 0.5)
    """
    if not scores or not others:
        return 0.5
    ranked = sorted(others)
    wins = 0.0
    for score in scores:
        below = bisect.bisect_left(ranked, score)  # others better than score
        above = len(ranked) - bisect.bisect_right(ranked, score)  # others worse than score
        wins += above + (len(ranked) - below - above) / 2
    return wins / (len(scores) * len(ranked))
