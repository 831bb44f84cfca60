"""Search algorithms: decisions, failures, resume from a JSON state."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detflow._core.errors import ConfigError
from detflow._search.searchers import (
    AshaSearcher,
    GridSearcher,
    Job,
    RandomSearcher,
    Searcher,
    SingleSearcher,
    asha_rungs,
    make_searcher,
)
from detflow._search.space import Choice, Interval, Space, sample

SPACE: Space = {
    "hyperparameters.lr": Interval(1e-4, 1e-1, log=True),
    "hyperparameters.layers": Interval(1, 8, integer=True),
    "hyperparameters.x": Interval(0.0, 1.0),
    "hyperparameters.opt": Choice(("sgd", "adam")),
}
GRID: Space = {"a": Choice((1, 2, 3)), "b": Choice(("x", "y")), "c": Choice((0.5, 1.5))}


def run_all(searcher: Searcher, metric: Any) -> list[Job]:
    """One worker: ask, tell ``metric(job)``, until the search is done."""
    jobs = []
    while (job := searcher.ask()) is not None:
        jobs.append(job)
        searcher.tell(job.trial_id, metric(job), job.length)
    assert searcher.done
    return jobs


# --- ASHA, scripted ---------------------------------------------------------------------

BASE = [8, 5, 9, 3, 7, 2, 6, 4]  # trial i reports BASE[i] - rung: lower is better


def scripted(job: Job) -> float:
    return float(BASE[job.trial_id] - job.rung)


def test_asha_scripted_rung_by_rung() -> None:
    searcher = AshaSearcher({}, max_length=4, max_trials=8, divisor=2, max_rungs=3)
    assert searcher.rung_lengths == (Fraction(1), Fraction(2), Fraction(4))
    jobs = run_all(searcher, scripted)
    assert [(j.trial_id, j.rung, j.length, j.promotion) for j in jobs] == [
        (0, 0, Fraction(1), False),
        (1, 0, Fraction(1), False),  # rung 0: {0: 8, 1: 5} -> top 1 is trial 1
        (1, 1, Fraction(2), True),
        (2, 0, Fraction(1), False),  # 3 results at rung 0 -> top 1 (trial 1) already promoted
        (3, 0, Fraction(1), False),  # 4 results at rung 0 -> top 2: 3 and 1
        (3, 1, Fraction(2), True),  # rung 1: {1: 4, 3: 2}; to max_length only from 4 (2**2)
        (4, 0, Fraction(1), False),  # rung 1 holds 2 of those 4 while trials can start
        (5, 0, Fraction(1), False),  # 6 at rung 0 -> top 3: 5, 3, 1
        (5, 1, Fraction(2), True),  # rung 1: {1: 4, 3: 2, 5: 1}: 3 results, still held
        (6, 0, Fraction(1), False),
        (7, 0, Fraction(1), False),  # max_trials reached: ASHA's own rule from here
        (5, 2, Fraction(4), True),  # rung 1's top 1 of 3: trial 5
        (7, 1, Fraction(2), True),  # 8 at rung 0 -> top 4: 5, 3, 7, 1
        (3, 2, Fraction(4), True),  # rung 1: {1: 4, 3: 2, 5: 1, 7: 3} -> top 2: 5 and 3
    ]  # nothing more to start or promote
    records = searcher.trials()
    assert [(r.status, r.rung, r.length_trained) for r in records] == [
        ("STOPPED_EARLY", 0, Fraction(1)),
        ("STOPPED_EARLY", 1, Fraction(2)),
        ("STOPPED_EARLY", 0, Fraction(1)),
        ("COMPLETED", 2, Fraction(4)),
        ("STOPPED_EARLY", 0, Fraction(1)),
        ("COMPLETED", 2, Fraction(4)),
        ("STOPPED_EARLY", 0, Fraction(1)),
        ("STOPPED_EARLY", 1, Fraction(2)),
    ]
    assert (records[3].best_metric, records[3].last_metric) == (1.0, 1.0)
    best = searcher.best()
    assert best is not None and best.trial_id == 5 and best.last_metric == 0.0
    assert sum(r.length_trained for r in records) == 16  # vs 32 for 8 full-length trials


def test_asha_trains_to_max_length_only_the_best_of_divisor_squared_while_trials_start() -> None:
    """The first promotions to the top rung wait for 9 results at the rung below (divisor 3),
    and go to the best of them; with no trial left to start they wait for nothing."""
    searcher = AshaSearcher({}, max_length=9, max_trials=200, divisor=3, max_rungs=3)
    at_rung_1: dict[int, float] = {}
    while (job := searcher.ask()) is not None and job.rung < 2:
        metric = float((job.trial_id * 7) % 11)  # an order unrelated to the trial ids
        if job.rung == 1:
            at_rung_1[job.trial_id] = metric
        searcher.tell(job.trial_id, metric, job.length)
    assert job is not None and job.rung == 2
    assert len(at_rung_1) == 9  # not 3, as ASHA's own rule would
    assert at_rung_1[job.trial_id] == min(at_rung_1.values())

    few = AshaSearcher({}, max_length=9, max_trials=9, divisor=3, max_rungs=3)
    jobs = run_all(few, lambda job: float(job.trial_id))
    assert [(j.trial_id, j.rung) for j in jobs if j.rung == 2] == [(0, 2)]  # once all 9 started
    assert jobs.index(next(j for j in jobs if j.rung == 2)) > max(
        i for i, j in enumerate(jobs) if not j.promotion
    )


def test_asha_larger_is_better_mirrors_smaller() -> None:
    searcher = AshaSearcher(
        {}, max_length=4, max_trials=8, divisor=2, max_rungs=3, smaller_is_better=False
    )
    mirrored = run_all(searcher, lambda job: -scripted(job))
    expected = run_all(
        AshaSearcher({}, max_length=4, max_trials=8, divisor=2, max_rungs=3), scripted
    )
    assert mirrored == expected
    best = searcher.best()
    assert best is not None and best.trial_id == 5


def test_asha_pending_while_running_then_stopped_early() -> None:
    searcher = AshaSearcher({}, max_length=4, max_trials=8, divisor=2, max_rungs=3)
    for _ in range(3):  # trials 0, 1 at rung 0, then 1 promoted
        job = searcher.ask()
        assert job is not None
        searcher.tell(job.trial_id, scripted(job), job.length)
    running = searcher.ask()
    assert running is not None and running.trial_id == 2
    statuses = [r.status for r in searcher.trials()]
    assert statuses == ["PENDING", "PENDING", "RUNNING"]  # trial 1 is below the top rung
    assert searcher.in_flight() == [running]


def test_asha_trials_start_while_others_run() -> None:
    searcher = AshaSearcher({}, max_length=16, max_trials=5, divisor=4, max_rungs=3)
    jobs = [searcher.ask() for _ in range(5)]
    assert [j.trial_id for j in jobs if j is not None] == [0, 1, 2, 3, 4]
    assert searcher.ask() is None and not searcher.done


# --- rungs --------------------------------------------------------------------------------


def test_rung_lengths_are_exact_fractions() -> None:
    assert asha_rungs(10, divisor=4, max_rungs=3) == (Fraction(5, 8), Fraction(5, 2), Fraction(10))
    assert asha_rungs(Fraction(3, 2), divisor=3, max_rungs=2) == (Fraction(1, 2), Fraction(3, 2))
    assert asha_rungs(7, divisor=2, max_rungs=1) == (Fraction(7),)


def test_rungs_merge_when_steps_round_equal() -> None:
    # 4 batches at 2 batches per optimizer step: 1/4, 1/2, 1, 2, 4 -> 1, 1, 1, 1, 2 steps
    def steps_of(length: Fraction) -> int:
        return math.ceil(length / 2)

    assert asha_rungs(4, divisor=2, max_rungs=5, steps_of=steps_of) == (Fraction(2), Fraction(4))
    searcher = AshaSearcher(
        {}, max_length=4, max_trials=4, divisor=2, max_rungs=5, steps_of=steps_of
    )
    assert searcher.rung_lengths == (Fraction(2), Fraction(4))
    job = searcher.ask()
    assert job is not None and job.length == 2


def test_rungs_of_zero_steps_are_dropped_top_kept() -> None:
    assert asha_rungs(4, 2, 5, steps_of=math.floor) == (Fraction(1), Fraction(2), Fraction(4))
    assert asha_rungs(1, 10, 3, steps_of=lambda length: 0) == (Fraction(1),)


def test_single_rung_asha_is_random_search() -> None:
    asha = AshaSearcher(SPACE, 5, max_trials=6, max_rungs=1, seed=3)
    rand = RandomSearcher(SPACE, 5, max_trials=6, seed=3)
    assert run_all(asha, lambda job: 1.0) == run_all(rand, lambda job: 1.0)
    assert {r.status for r in asha.trials()} == {"COMPLETED"}


# --- failures -----------------------------------------------------------------------------


def test_failed_trials_are_never_promoted_and_search_goes_on() -> None:
    searcher = AshaSearcher({}, max_length=4, max_trials=6, divisor=2, max_rungs=2)
    jobs = []
    while (job := searcher.ask()) is not None:
        jobs.append(job)
        if job.trial_id in (0, 3):  # the best ones, had they reported
            searcher.tell(job.trial_id, None, Fraction(1, 2), error="RuntimeError: boom")
        else:
            searcher.tell(job.trial_id, float(job.trial_id), job.length)
    assert searcher.done
    assert [(j.trial_id, j.promotion) for j in jobs] == [
        (0, False),
        (1, False),
        (2, False),  # rung 0 promotes to max_length only from 4 results while trials start
        (3, False),
        (4, False),
        (5, False),  # 4 results (1, 2, 4, 5): top 2 are 1 and 2, the failed 0 and 3 never
        (1, True),
        (2, True),
    ]
    failed = [r for r in searcher.trials() if r.status == "FAILED"]
    assert [(r.trial_id, r.error, r.length_trained, r.rung) for r in failed] == [
        (0, "RuntimeError: boom", Fraction(1, 2), 0),
        (3, "RuntimeError: boom", Fraction(1, 2), 0),
    ]
    best = searcher.best()
    assert best is not None and best.trial_id == 1


@pytest.mark.parametrize(
    ("metric", "error"), [(None, "no metric reported"), (math.nan, "metric is nan")]
)
def test_missing_or_nan_metric_is_a_failure(metric: float | None, error: str) -> None:
    searcher = SingleSearcher(3)
    job = searcher.ask()
    assert job is not None
    searcher.tell(0, metric, job.length)
    (record,) = searcher.trials()
    assert (record.status, record.error, record.best_metric) == ("FAILED", error, None)
    assert searcher.done and searcher.best() is None


def test_tell_without_job_in_flight_raises() -> None:
    searcher = SingleSearcher(3)
    with pytest.raises(ValueError, match="no job in flight"):
        searcher.tell(0, 1.0, 3)
    job = searcher.ask()
    assert job is not None
    searcher.tell(0, 1.0, 3)
    with pytest.raises(ValueError, match="no job in flight"):
        searcher.tell(0, 1.0, 3)


# --- single, grid, random, done, best -------------------------------------------------


def test_single_runs_one_trial_and_done_waits_for_it() -> None:
    searcher = SingleSearcher(Fraction(5, 2), hparams={"lr": 0.1})
    assert not searcher.done
    job = searcher.ask()
    assert job == Job(0, {"lr": 0.1}, Fraction(5, 2), 0, False)
    assert searcher.ask() is None
    assert not searcher.done  # in flight
    assert searcher.trials()[0].status == "RUNNING"
    searcher.tell(0, 0.25, Fraction(5, 2))
    assert searcher.done and searcher.ask() is None
    assert searcher.trials()[0].status == "COMPLETED"


def test_grid_runs_every_point_once_at_full_length() -> None:
    searcher = GridSearcher(GRID, max_length=3)
    jobs = run_all(searcher, lambda job: job.hparams["a"] * job.hparams["c"])
    assert len(jobs) == 12
    assert [j.trial_id for j in jobs] == list(range(12))
    assert jobs[0].hparams == {"a": 1, "b": "x", "c": 0.5}
    assert jobs[1].hparams == {"a": 1, "b": "x", "c": 1.5}
    assert jobs[-1].hparams == {"a": 3, "b": "y", "c": 1.5}
    assert {(j.length, j.rung, j.promotion) for j in jobs} == {(Fraction(3), 0, False)}
    assert len({tuple(j.hparams.values()) for j in jobs}) == 12
    best = searcher.best()
    assert best is not None and best.hparams["a"] == 1 and best.hparams["c"] == 0.5


def test_grid_rejects_intervals() -> None:
    with pytest.raises(ConfigError, match="grid") as info:
        GridSearcher({"lr": Interval(0.1, 1.0)}, 3)
    assert info.value.key == "lr"


def test_random_is_seeded_and_order_independent() -> None:
    jobs = run_all(RandomSearcher(SPACE, 10, max_trials=20, seed=7), lambda job: 0.0)
    assert len(jobs) == 20
    again = run_all(RandomSearcher(SPACE, 10, max_trials=20, seed=7), lambda job: 0.0)
    assert jobs == again
    for job in jobs:
        assert job.hparams == sample(SPACE, random.Random(f"7:{job.trial_id}"))
        assert 1e-4 <= job.hparams["hyperparameters.lr"] <= 1e-1
        assert job.hparams["hyperparameters.layers"] in range(1, 9)
    other = run_all(RandomSearcher(SPACE, 10, max_trials=20, seed=8), lambda job: 0.0)
    assert [j.hparams for j in other] != [j.hparams for j in jobs]


def test_best_prefers_the_furthest_rung_then_the_metric() -> None:
    searcher = AshaSearcher({}, max_length=4, max_trials=3, divisor=2, max_rungs=2)
    assert searcher.best() is None
    # trial 0 is promoted and gets worse at rung 1 (0.9); trials 1, 2 did better at rung 0
    metrics = {(0, 0): 0.5, (1, 0): 0.6, (0, 1): 0.9, (2, 0): 0.7}
    jobs = run_all(searcher, lambda job: metrics[job.trial_id, job.rung])
    assert [(j.trial_id, j.rung) for j in jobs] == [(0, 0), (1, 0), (2, 0), (0, 1)]
    best = searcher.best()
    assert best is not None and best.trial_id == 0
    assert (best.best_metric, best.last_metric, best.status) == (0.5, 0.9, "COMPLETED")


def test_best_respects_direction() -> None:
    for smaller, expected in ((True, 0), (False, 2)):
        searcher = RandomSearcher({}, 1, max_trials=3, smaller_is_better=smaller)
        run_all(searcher, lambda job: float(job.trial_id))
        best = searcher.best()
        assert best is not None and best.trial_id == expected


# --- state and resume -------------------------------------------------------------------


def outcome(job: Job) -> tuple[float | None, str | None]:
    """A deterministic result: some jobs fail, the rest report a metric of hparams and length."""
    if (job.trial_id * 7 + job.rung) % 5 == 3:
        return None, "RuntimeError: boom"
    x = job.hparams.get("hyperparameters.x", job.hparams.get("a", 0))
    return (x - 0.3) ** 2 + 1 / float(job.length), None


def drive(searcher: Searcher, workers: int, actions: float = math.inf) -> list[Job]:
    """Fill free workers one ask at a time, else tell one in-flight job; stop after ``actions``.

    Which job reports next depends only on the searcher's in-flight list, so a driver restarted
    from a saved state makes the same moves.
    """
    asked: list[Job] = []
    done = 0
    while done < actions:
        done += 1
        flight = searcher.in_flight()
        if len(flight) < workers and (job := searcher.ask()) is not None:
            asked.append(job)
            continue
        if not flight:
            assert searcher.done
            break
        job = flight[(flight[-1].trial_id * 3) % len(flight)]
        metric, error = outcome(job)
        length = job.length if error is None else job.length / 2
        searcher.tell(job.trial_id, metric, length, error=error)
    return asked


def make(kind: str, seed: int = 0) -> Searcher:
    if kind == "grid":
        return make_searcher(
            "grid",
            space=GRID,
            max_length=3,
            max_trials=1,
            seed=seed,
            metric="loss",
            smaller_is_better=True,
        )
    return make_searcher(
        kind,
        space=SPACE,
        max_length=Fraction(27, 2),
        max_trials=20,
        seed=seed,
        metric="loss",
        smaller_is_better=True,
        divisor=3,
        max_rungs=4,
    )


def check_resume(kind: str, workers: int, cut: int, seed: int) -> None:
    whole = make(kind, seed)
    expected = drive(whole, workers)

    first = make(kind, seed)
    before = drive(first, workers, cut)
    text = json.dumps(first.state_dict())
    second = make(kind, seed)
    second.load_state_dict(json.loads(text))
    assert second.in_flight() == first.in_flight()
    after = drive(second, workers)

    assert before + after == expected
    assert second.trials() == whole.trials()
    assert second.best() == whole.best()
    assert second.state_dict() == whole.state_dict()


@pytest.mark.parametrize("kind", ["grid", "random", "asha"])
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("cut", [0, 1, 2, 5, 9, 17, 30, 1000])
def test_resume_continues_exactly(kind: str, workers: int, cut: int) -> None:
    check_resume(kind, workers, cut, seed=1)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["random", "asha"]),
    workers=st.integers(1, 5),
    cut=st.integers(0, 80),
    seed=st.integers(0, 1000),
)
def test_resume_continues_exactly_anywhere(kind: str, workers: int, cut: int, seed: int) -> None:
    check_resume(kind, workers, cut, seed)


def test_state_dict_is_json_with_fraction_strings() -> None:
    searcher = make("asha")
    drive(searcher, workers=3, actions=12)
    state = searcher.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["settings"]["rung_lengths"] == ["1/2", "3/2", "9/2", "27/2"]
    assert all(isinstance(t["length_trained"], str) for t in state["trials"])
    assert state["in_flight"] == [job.trial_id for job in searcher.in_flight()]
    assert state["in_flight"]


def test_load_state_refuses_other_settings() -> None:
    searcher = make("asha", seed=1)
    drive(searcher, workers=2, actions=6)
    with pytest.raises(ValueError, match="does not match"):
        make("asha", seed=2).load_state_dict(searcher.state_dict())
    with pytest.raises(ValueError, match="does not match"):
        make("random", seed=1).load_state_dict(searcher.state_dict())


# --- ASHA against a reference model -------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    divisor=st.integers(2, 4),
    max_rungs=st.integers(1, 4),
    max_trials=st.integers(1, 25),
    workers=st.integers(1, 4),
    smaller=st.booleans(),
)
def test_asha_matches_reference_model(
    data: st.DataObject,
    divisor: int,
    max_rungs: int,
    max_trials: int,
    workers: int,
    smaller: bool,
) -> None:
    searcher = AshaSearcher(
        {},
        max_length=divisor ** (max_rungs - 1),
        max_trials=max_trials,
        divisor=divisor,
        max_rungs=max_rungs,
        smaller_is_better=smaller,
    )
    top = max_rungs - 1
    results: list[dict[int, float]] = [{} for _ in range(max_rungs)]
    rung_of: dict[int, int] = {}
    failed: set[int] = set()

    def expected_next() -> tuple[int, int] | None:
        for rung in reversed(range(top)):
            if rung == top - 1 and len(rung_of) < max_trials and len(results[rung]) < divisor**2:
                continue  # to max_length only from divisor**2 results while trials can start
            sign = 1 if smaller else -1
            ranked = sorted(results[rung], key=lambda t: (sign * results[rung][t], t))
            for trial_id in ranked[: len(ranked) // divisor]:
                if rung_of[trial_id] == rung and trial_id not in failed:
                    return trial_id, rung + 1
        return (len(rung_of), 0) if len(rung_of) < max_trials else None

    while True:
        flight = searcher.in_flight()
        if len(flight) < workers:
            job = searcher.ask()
            expected = expected_next()
            assert (None if job is None else (job.trial_id, job.rung)) == expected
            if job is not None:
                assert job.promotion == (job.rung > 0)
                assert job.length == Fraction(divisor**job.rung)
                rung_of[job.trial_id] = job.rung
                continue
        if not flight:
            break
        job = data.draw(st.sampled_from(flight))
        if data.draw(st.integers(0, 9)) == 0:
            failed.add(job.trial_id)
            searcher.tell(job.trial_id, None, 0, error="boom")
        else:
            metric = data.draw(st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.8, 1.3]))
            results[job.rung][job.trial_id] = metric
            searcher.tell(job.trial_id, metric, job.length)

    assert searcher.done
    records = searcher.trials()
    assert len(records) == max_trials
    for record in records:
        if record.trial_id in failed:
            assert record.status == "FAILED"
        elif record.rung == top:
            assert record.status == "COMPLETED"
        else:
            assert record.status == "STOPPED_EARLY"


# --- factory ------------------------------------------------------------------------------


def test_make_searcher_names() -> None:
    common: dict[str, Any] = {"max_length": 4, "max_trials": 3, "seed": 0, "metric": "m"}
    kinds = {
        "single": SingleSearcher,
        "grid": GridSearcher,
        "random": RandomSearcher,
        "asha": AshaSearcher,
    }
    for name, cls in kinds.items():
        searcher = make_searcher(name, space={}, smaller_is_better=False, **common)
        assert type(searcher) is cls
        assert searcher.metric == "m" and searcher.smaller_is_better is False
    with pytest.raises(ConfigError, match="one of single, grid, random, asha"):
        make_searcher("bayes", space={}, smaller_is_better=True, **common)


def test_make_single_takes_fixed_values_only() -> None:
    common: dict[str, Any] = {"max_length": 4, "max_trials": 1, "seed": 0, "metric": "m"}
    space: Space = {"lr": Choice((0.1,))}
    job = make_searcher("single", space=space, smaller_is_better=True, **common).ask()
    assert job is not None and job.hparams == {"lr": 0.1}
    with pytest.raises(ConfigError) as info:
        make_searcher("single", space={"lr": Choice((0.1, 0.2))}, smaller_is_better=True, **common)
    assert info.value.key == "lr"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"divisor": 1}, "searcher.divisor"),
        ({"max_rungs": 0}, "searcher.max_rungs"),
        ({"max_trials": 0}, "searcher.max_trials"),
        ({"max_trials": 2.5}, "searcher.max_trials"),
        ({"max_length": 0}, "searcher.max_length"),
        ({"max_length": Fraction(-1, 2)}, "searcher.max_length"),
    ],
)
def test_make_searcher_validates(overrides: dict[str, Any], key: str) -> None:
    kwargs: dict[str, Any] = {
        "space": {},
        "max_length": 4,
        "max_trials": 3,
        "seed": 0,
        "metric": "m",
        "smaller_is_better": True,
        **overrides,
    }
    for name in ("single", "asha"):
        with pytest.raises(ConfigError) as info:
            make_searcher(name, **kwargs)
        assert info.value.key == key
