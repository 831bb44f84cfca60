"""ASHA's promotions from sorted rungs (detflow/_search/rungs.py) decide exactly as the
straightforward re-sort of every rung did: a property test against that reference, kept here."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from detflow._search.rungs import Rung, RungLadder, win_rate
from detflow._search.searchers import (
    AdaptiveAshaSearcher,
    AshaSearcher,
    BohbSearcher,
    Job,
    Searcher,
    TrialState,
)
from detflow._search.space import Interval, Space

SPACE: Space = {"x": Interval(0.0, 1.0)}


def _reference_promotable(
    trials: Sequence[TrialState], rungs: Iterable[int], searcher: AshaSearcher, can_start: bool
) -> int | None:
    """The promotion rule as it was: re-sort each rung's results on every ask (and the rung
    below the top holds its promotions until it has divisor**2 results while trials can start)."""
    top = len(searcher.rung_lengths) - 1
    for rung in rungs:
        reported = [t for t in trials if rung in t.metrics]
        if can_start and rung == top - 1 and len(reported) < searcher.divisor**2:
            continue
        reported.sort(key=lambda t: (searcher._score(t.metrics[rung]), t.trial_id))
        for trial in reported[: len(reported) // searcher.divisor]:
            if trial.rung == rung and trial.error is None:
                return trial.trial_id
    return None


class ReferenceAsha(AshaSearcher):
    def _promotion(self) -> int | None:
        rungs = range(len(self.rung_lengths) - 2, -1, -1)
        return _reference_promotable(self._trials, rungs, self, len(self._trials) < self.max_trials)


class ReferenceAdaptive(AdaptiveAshaSearcher):
    def _next_job(self) -> Job | None:  # adaptive_asha's own, with the reference promotion
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
            rungs = range(top - 1, self.bracket_starts[b] - 1, -1)
            can_start = started[b] < self.brackets[b].max_trials
            promoted = _reference_promotable(mine, rungs, self, can_start)
            if promoted is not None:
                trial = self._trials[promoted]
                rung = trial.rung + 1
                return Job(promoted, dict(trial.hparams), self.rung_lengths[rung], rung, True)
            if started[b] < self.brackets[b].max_trials:
                trial_id = len(self._trials)
                hparams = self._new_hparams(trial_id)
                assert hparams is not None
                self._chosen = b
                start = self.bracket_starts[b]
                return Job(trial_id, hparams, self.rung_lengths[start], start, False)
        return None


def _drive(
    searchers: Sequence[Searcher], rng: random.Random, workers: int, reload_at: int | None
) -> list[Job]:
    """Ask and tell every searcher the same, results in a random order with ties, failures and
    nan; the jobs asked, checked equal across the searchers at every step."""
    running: list[Job] = []
    jobs: list[Job] = []
    step = 0
    while True:
        while len(running) < workers:
            asked = [s.ask() for s in searchers]
            assert all(a == asked[0] for a in asked), asked
            if asked[0] is None:
                break
            running.append(asked[0])
            jobs.append(asked[0])
        if not running:
            break
        job = running.pop(rng.randrange(len(running)))
        roll = rng.random()
        metric: float | None = float(rng.randrange(6))  # few values: many ties
        error = None
        if roll < 0.05:
            metric = float("nan")
        elif roll < 0.1:
            metric, error = None, "boom"
        for s in searchers:
            s.tell(job.trial_id, metric, job.length, error=error)
        step += 1
        if step == reload_at:  # a resumed search decides the same
            for s in searchers:
                s.load_state_dict(json.loads(json.dumps(s.state_dict())))
    return jobs


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    workers=st.integers(1, 5),
    divisor=st.integers(2, 4),
    max_rungs=st.integers(1, 4),
    trials=st.integers(1, 40),
    smaller=st.booleans(),
    reload_at=st.none() | st.integers(1, 60),
)
def test_asha_promotes_as_the_reference_does(
    seed: int,
    workers: int,
    divisor: int,
    max_rungs: int,
    trials: int,
    smaller: bool,
    reload_at: int | None,
) -> None:
    made = [
        cls(
            SPACE,
            max_length=64,
            max_trials=trials,
            divisor=divisor,
            max_rungs=max_rungs,
            seed=seed,
            smaller_is_better=smaller,
        )
        for cls in (AshaSearcher, ReferenceAsha)
    ]
    jobs = _drive(made, random.Random(seed), workers, reload_at)
    assert sum(not j.promotion for j in jobs) == trials
    assert made[0].trials() == made[1].trials()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    workers=st.integers(1, 6),
    mode=st.sampled_from(["aggressive", "standard", "conservative"]),
    trials=st.integers(1, 60),
    concurrent=st.integers(0, 6),
    reload_at=st.none() | st.integers(1, 80),
)
def test_adaptive_asha_promotes_as_the_reference_does(
    seed: int, workers: int, mode: str, trials: int, concurrent: int, reload_at: int | None
) -> None:
    made = [
        cls(
            SPACE,
            max_length=256,
            max_trials=trials,
            mode=mode,
            divisor=2,
            max_rungs=5,
            max_concurrent_trials=concurrent,
            seed=seed,
        )
        for cls in (AdaptiveAshaSearcher, ReferenceAdaptive)
    ]
    _drive(made, random.Random(seed), workers, reload_at)
    assert made[0].trials() == made[1].trials()


def test_a_rung_promotes_its_best_waiting_trial_within_the_top_share() -> None:
    rung = Rung()
    for trial_id, score in enumerate([5.0, 1.0, 3.0, 2.0, 4.0, 0.5, 6.0, 7.0]):
        rung.add(trial_id, score)
    assert rung.promotable(divisor=4) == 5  # top 2: trials 5 and 1
    rung.close(5)
    assert rung.promotable(divisor=4) == 1
    rung.close(1)
    assert rung.promotable(divisor=4) is None  # trial 3 is third: outside the top 2
    rung.add(8, 9.0)  # 9 results: still the top 2
    assert rung.promotable(divisor=4) is None
    rung.add(1, 8.0)  # a result replaced: trial 1 now ranks low, and waits again
    assert rung.ranked()[-2:] == [(8.0, 1), (9.0, 8)] and rung.score(1) == 8.0
    assert rung.promotable(divisor=2) == 3  # top 4: 5 (closed), 3, 2, 4
    ladder = RungLadder(rungs=2)
    ladder.add(0, 0, 0, 1.0)
    ladder.add(1, 0, 1, 0.0)
    assert ladder.count(0) == 2 and ladder.ranked(0) == [(0.0, 1), (1.0, 0)]
    assert ladder.promotable(0, [0], divisor=1) == 0  # groups promote apart


@given(
    scores=st.lists(st.floats(-10, 10), min_size=1, max_size=20),
    others=st.lists(st.floats(-10, 10), min_size=1, max_size=20),
)
def test_win_rate_is_the_share_of_pairs_won_ties_counting_a_half(
    scores: list[float], others: list[float]
) -> None:
    pairs = [(a, b) for a in scores for b in others]
    expected = sum(1.0 if a < b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert math.isclose(win_rate(scores, others), expected, abs_tol=1e-12)
    assert math.isclose(win_rate(scores, others) + win_rate(others, scores), 1.0, abs_tol=1e-12)


def test_win_rate_of_nothing_is_even() -> None:
    assert win_rate([], [1.0]) == win_rate([1.0], []) == 0.5


def asks_per_second(searcher: Searcher, seed: int = 0) -> float:
    """Run ``searcher``'s sweep to its end with 4 workers and random metrics; asks per second."""
    rng = random.Random(seed)
    running: list[Job] = []
    asks = 0
    spent = 0.0
    while True:
        while len(running) < 4:
            start = time.perf_counter()
            job = searcher.ask()
            spent += time.perf_counter() - start
            asks += 1
            if job is None:
                break
            running.append(job)
        if not running:
            return asks / spent
        job = running.pop(rng.randrange(len(running)))
        searcher.tell(job.trial_id, rng.random(), job.length)


def test_asks_per_second_runs_for_both_algorithms() -> None:
    """The micro-benchmark itself (numbers: see the report; timing is for bench/, not here)."""
    kwargs: dict[str, Any] = {"max_length": 256, "max_trials": 200, "divisor": 4, "max_rungs": 5}
    assert asks_per_second(AshaSearcher(SPACE, **kwargs)) > 0
    assert asks_per_second(ReferenceAsha(SPACE, **kwargs)) > 0
    assert asks_per_second(BohbSearcher(SPACE, **kwargs)) > 0


if __name__ == "__main__":  # python -m tests.search.test_rungs: asks/s at 5,000 trials
    for name, cls in (("sorted rungs", AshaSearcher), ("re-sort (reference)", ReferenceAsha)):
        searcher = cls(SPACE, max_length=256, max_trials=5000, divisor=4, max_rungs=5)
        print(f"{name}: {asks_per_second(searcher):,.0f} asks/s at 5,000 trials")
