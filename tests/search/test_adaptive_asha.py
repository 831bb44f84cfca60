"""adaptive_asha (Determined's): brackets, promotions per bracket, one rung ladder, resume."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detflow._core.errors import ConfigError
from detflow._core.experiment import Experiment
from detflow._search.searchers import (
    AdaptiveAshaSearcher,
    AshaSearcher,
    Bracket,
    Job,
    Searcher,
    adaptive_brackets,
    asha_rungs,
    bracket_concurrency,
    bracket_trials,
    make_searcher,
)
from detflow._search.space import Interval, Space

SPACE: Space = {"hyperparameters.x": Interval(0.0, 1.0)}


def run_all(searcher: Searcher, metric: Any) -> list[Job]:
    jobs = []
    while (job := searcher.ask()) is not None:
        jobs.append(job)
        searcher.tell(job.trial_id, metric(job), job.length)
    assert searcher.done
    return jobs


# --- brackets, as Determined's adaptive_asha.go and its tests make them -------------------


def test_bracket_trials_as_determined_splits_them() -> None:
    # Determined's TestBracketMaxTrials
    assert bracket_trials(20, 3, [3, 2, 1]) == [12, 5, 3]
    assert bracket_trials(50, 3, [4, 3]) == [35, 15]
    assert bracket_trials(50, 4, [3, 2]) == [37, 13]
    assert bracket_trials(100, 4, [4, 3, 2]) == [70, 22, 8]


def test_bracket_concurrency_as_determined_splits_it() -> None:
    # Determined's TestBracketMaxConcurrentTrials
    assert bracket_concurrency(0, 3, [9, 3, 1]) == [3, 3, 3]
    assert bracket_concurrency(11, 3, [9, 3, 1]) == [4, 4, 3]
    assert bracket_concurrency(0, 4, [40, 10]) == [10, 10]
    assert bracket_concurrency(1, 4, [12, 4]) == [1, 1]  # at least one each


@pytest.mark.parametrize(
    ("mode", "rungs"),
    [("aggressive", [5]), ("standard", [5, 4, 3]), ("conservative", [5, 4, 3, 2, 1])],
)
def test_modes_give_determineds_brackets(mode: str, rungs: list[int]) -> None:
    brackets = adaptive_brackets(10**6, 10**4, mode=mode, max_rungs=5)
    assert [b.rungs for b in brackets] == rungs
    assert sum(b.max_trials for b in brackets) == 10**4


def test_standard_mode_for_even_and_odd_max_rungs() -> None:
    rungs = {n: [b.rungs for b in adaptive_brackets(10**9, 10**6, max_rungs=n)] for n in (1, 2, 4)}
    assert rungs == {1: [1], 2: [2, 1], 4: [4, 3, 2]}


def test_adaptive_asha_defaults_to_divisor_3_and_5_rungs_capped() -> None:
    # detflow's default divisor (3, chosen on lcbench: bench/README.md), Determined's 5 rungs:
    # 52 epochs and 100 trials cap at 1 + floor(log3 52) = 4 rungs: brackets 4, 3, 2.
    assert [b.rungs for b in adaptive_brackets(52, 100)] == [4, 3, 2]
    searcher = AdaptiveAshaSearcher({}, 52, 100, steps_of=math.ceil)
    assert searcher.rung_lengths == tuple(Fraction(52, d) for d in (27, 9, 3, 1))


def test_determineds_defaults_cap_max_rungs_by_trials_and_length() -> None:
    # 16 trials, divisor 4: 1 + floor(log4 16) = 3 rungs at most; standard: brackets 3, 2
    assert adaptive_brackets(937, 16, divisor=4, max_concurrent_trials=16) == (
        Bracket(3, 12, 8),
        Bracket(2, 4, 8),
    )
    # a max_length of 4 (epochs) caps at 1 + floor(log4 4) = 2 rungs
    assert [b.rungs for b in adaptive_brackets(4, 16, divisor=4)] == [2, 1]
    # exact integer logs: 1000 trials, divisor 10 is 4 rungs (Determined's floats gave 3)
    assert [b.rungs for b in adaptive_brackets(10**6, 1000, divisor=10, mode="aggressive")] == [4]


def test_bracket_rungs_are_taken_as_given_most_rungs_first() -> None:
    brackets = adaptive_brackets(
        16, 100, divisor=4, bracket_rungs=[2, 4, 3], max_concurrent_trials=4
    )
    assert brackets == (Bracket(4, 70, 2), Bracket(3, 22, 1), Bracket(2, 8, 1))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"mode": "wild"}, "searcher.mode"),
        ({"bracket_rungs": [0]}, "searcher.bracket_rungs"),
        ({"divisor": 1}, "searcher.divisor"),
        ({"max_trials": 0}, "searcher.max_trials"),
    ],
)
def test_bad_settings_name_their_key(kwargs: dict[str, Any], key: str) -> None:
    args: dict[str, Any] = {"max_length": 16, "max_trials": 8, **kwargs}
    with pytest.raises(ConfigError) as info:
        AdaptiveAshaSearcher({}, **args)
    assert info.value.key == key


# --- the search ---------------------------------------------------------------------------


def determined_case(smaller_is_better: bool) -> tuple[AdaptiveAshaSearcher, list[Job]]:
    """Determined's TestAdaptiveASHASearchMethod: 900 batches, 5 trials, standard, 2 rungs,
    divisor 3. Bracket 0 (2 rungs, 3 trials) reports 0.1, 0.2, 0.3; bracket 1 (1 rung,
    2 trials) 0.4, 0.5 (mirrored when larger is better)."""
    searcher = AdaptiveAshaSearcher(
        {},
        max_length=900,
        max_trials=5,
        mode="standard",
        max_rungs=2,
        divisor=3,
        max_concurrent_trials=1,
        smaller_is_better=smaller_is_better,
    )
    assert [(b.rungs, b.max_trials) for b in searcher.brackets] == [(2, 3), (1, 2)]
    given: dict[int, float] = {}
    counts = [0, 0]
    metrics = [[0.1, 0.2, 0.3], [0.4, 0.5]]

    def metric(job: Job) -> float:
        if job.trial_id not in given:
            bracket = searcher._bracket_of[job.trial_id]
            given[job.trial_id] = metrics[bracket][counts[bracket]]
            counts[bracket] += 1
        value = given[job.trial_id]
        return value if smaller_is_better else 0.6 - value

    return searcher, run_all(searcher, metric)


@pytest.mark.parametrize("smaller_is_better", [True, False])
def test_determineds_adaptive_asha_case(smaller_is_better: bool) -> None:
    searcher, jobs = determined_case(smaller_is_better)
    assert searcher.rung_lengths == (Fraction(300), Fraction(900))
    lengths: dict[int, list[Fraction]] = {}
    for job in jobs:
        lengths.setdefault(job.trial_id, []).append(job.length)
    brackets = searcher._bracket_of
    by_bracket = sorted((brackets[t], lengths[t]) for t in lengths)
    # Determined's expected trials: "300B 900B", "300B", "300B", "900B", "900B"
    assert sorted(by_bracket) == [
        (0, [Fraction(300)]),
        (0, [Fraction(300)]),
        (0, [Fraction(300), Fraction(900)]),
        (1, [Fraction(900)]),
        (1, [Fraction(900)]),
    ]
    records = searcher.trials()
    assert sorted(r.status for r in records).count("COMPLETED") == 3
    best = searcher.best()
    assert best is not None and best.length_trained == 900
    assert best.best_metric == (0.1 if smaller_is_better else 0.5)


def test_one_rung_ladder_starts_short_brackets_higher() -> None:
    searcher = AdaptiveAshaSearcher(
        {}, max_length=64, max_trials=64, divisor=4, bracket_rungs=[3, 4], max_concurrent_trials=3
    )
    assert [b.rungs for b in searcher.brackets] == [4, 3]
    assert searcher.rung_lengths == (Fraction(1), Fraction(4), Fraction(16), Fraction(64))
    assert searcher.bracket_starts == (0, 1)
    assert searcher.bracket_rung_lengths(1) == (Fraction(4), Fraction(16), Fraction(64))
    jobs = [searcher.ask() for _ in range(3)]
    assert [(j.rung, j.length, j.promotion) for j in jobs if j] == [
        (0, Fraction(1), False),
        (1, Fraction(4), False),  # bracket 1 starts at rung 1 of the ladder
        (0, Fraction(1), False),  # bracket 0 has 2 of the 3 slots
    ]
    assert searcher.ask() is None  # both brackets at their limit


def test_rungs_that_round_to_the_same_steps_merge_in_every_bracket() -> None:
    def steps_of(length: Fraction) -> int:
        return math.ceil(length / 8)

    searcher = AdaptiveAshaSearcher(
        {},
        max_length=64,
        max_trials=64,
        divisor=4,
        bracket_rungs=[4, 3, 2],
        max_concurrent_trials=3,
        steps_of=steps_of,
    )
    # 1, 4, 16, 64 -> 1, 1, 2, 8 steps: 1 and 4 merge into 4
    assert searcher.rung_lengths == (Fraction(4), Fraction(16), Fraction(64))
    assert searcher.bracket_starts == (0, 0, 1)


def test_promoted_trial_continues_and_completes_in_its_bracket() -> None:
    searcher = AdaptiveAshaSearcher(
        {}, max_length=16, max_trials=8, max_rungs=2, max_concurrent_trials=2
    )
    jobs = run_all(searcher, lambda job: float(job.trial_id))
    promotions = [j for j in jobs if j.promotion]
    assert promotions and all(j.rung == 1 and j.length == 16 for j in promotions)
    for job in promotions:
        assert searcher._bracket_of[job.trial_id] == 0
    statuses = {r.trial_id: r.status for r in searcher.trials()}
    assert all(statuses[t] == "COMPLETED" for t, b in enumerate(searcher._bracket_of) if b == 1)


def test_determineds_defaults_complete_some_trials_and_stop_most_early() -> None:
    searcher = make_searcher(
        "adaptive_asha",
        space=SPACE,
        max_length=937,
        max_trials=16,
        seed=0,
        metric="loss",
        smaller_is_better=True,
        max_concurrent_trials=4,
    )
    assert searcher.warnings() == []
    run_all(searcher, lambda job: job.hparams["hyperparameters.x"] + 1 / float(job.length))
    statuses = [r.status for r in searcher.trials()]
    assert len(statuses) == 16
    assert statuses.count("COMPLETED") >= 1
    assert statuses.count("STOPPED_EARLY") > 8
    best = searcher.best()
    assert best is not None and best.length_trained == 937


def test_asha_warns_when_no_trial_can_reach_the_top_rung() -> None:
    searcher = AshaSearcher({}, max_length=937, max_trials=16, divisor=4, max_rungs=5)
    assert searcher.warnings() == [
        "16 trials, divisor 4: rung 4 needs 256; nothing will train to max_length"
    ]
    assert AshaSearcher({}, max_length=937, max_trials=256, max_rungs=5).warnings() == []
    statuses = {r.status for r in (run_all(searcher, lambda job: 1.0) and searcher.trials())}
    assert "COMPLETED" not in statuses


def test_adaptive_warns_only_when_no_bracket_reaches_max_length() -> None:
    searcher = AdaptiveAshaSearcher({}, 256, 4, bracket_rungs=[4, 3])
    (warning,) = searcher.warnings()
    assert warning.startswith("no bracket can train a trial to max_length: bracket 1 has")


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adaptive", AdaptiveAshaSearcher),
        ("adaptive_simple", AdaptiveAshaSearcher),
        ("async_halving", AshaSearcher),
        ("adaptive_asha", AdaptiveAshaSearcher),
    ],
)
def test_determineds_names(name: str, cls: type) -> None:
    searcher = make_searcher(
        name, space={}, max_length=16, max_trials=8, seed=0, metric="m", smaller_is_better=True
    )
    assert type(searcher) is cls


# --- state and resume ---------------------------------------------------------------------


def outcome(job: Job) -> tuple[float | None, str | None]:
    if (job.trial_id * 7 + job.rung) % 5 == 3:
        return None, "RuntimeError: boom"
    return (job.hparams["hyperparameters.x"] - 0.3) ** 2 + 1 / float(job.length), None


def drive(searcher: Searcher, workers: int, actions: float = math.inf) -> list[Job]:
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
        searcher.tell(job.trial_id, metric, job.length if error is None else job.length / 2, error)
    return asked


def make(mode: str, seed: int, concurrent: int) -> AdaptiveAshaSearcher:
    return AdaptiveAshaSearcher(
        SPACE,
        max_length=Fraction(81, 2),
        max_trials=30,
        mode=mode,
        divisor=3,
        max_rungs=4,
        max_concurrent_trials=concurrent,
        seed=seed,
    )


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(["aggressive", "standard", "conservative"]),
    workers=st.integers(1, 6),
    concurrent=st.integers(1, 6),
    cut=st.integers(0, 100),
    seed=st.integers(0, 1000),
)
def test_resume_continues_exactly_anywhere(
    mode: str, workers: int, concurrent: int, cut: int, seed: int
) -> None:
    whole = make(mode, seed, concurrent)
    expected = drive(whole, workers)
    first = make(mode, seed, concurrent)
    before = drive(first, workers, cut)
    state = json.loads(json.dumps(first.state_dict()))
    second = make(mode, seed, concurrent)
    second.load_state_dict(state)
    assert second.in_flight() == first.in_flight()
    assert second.state_dict() == state
    after = drive(second, workers)
    assert before + after == expected
    assert second.trials() == whole.trials()
    assert second.best() == whole.best()
    assert second.state_dict() == whole.state_dict()


def test_state_is_versioned_and_refuses_other_brackets() -> None:
    searcher = make("standard", seed=1, concurrent=2)
    drive(searcher, workers=2, actions=10)
    state = searcher.state_dict()
    assert state["version"] == 1
    assert state["settings"]["searcher"] == "AdaptiveAshaSearcher"
    assert len(state["brackets"]) == len(state["trials"])
    for other in (make("aggressive", 1, 2), make("standard", 1, 4), make("standard", 2, 2)):
        with pytest.raises(ValueError, match="does not match"):
            other.load_state_dict(state)
    broken = {**state, "brackets": state["brackets"][:-1]}
    with pytest.raises(ValueError, match="bracket"):
        make("standard", 1, 2).load_state_dict(broken)
    asha = AshaSearcher(SPACE, Fraction(81, 2), 30, divisor=3, max_rungs=4, seed=1)
    with pytest.raises(ValueError, match="does not match"):
        asha.load_state_dict(state)


# --- against a model of independent brackets ----------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    mode=st.sampled_from(["aggressive", "standard", "conservative"]),
    divisor=st.integers(2, 4),
    max_rungs=st.integers(1, 4),
    max_trials=st.integers(1, 40),
    concurrent=st.integers(1, 5),
    workers=st.integers(1, 6),
)
def test_each_bracket_is_an_asha_of_its_own(
    data: st.DataObject,
    mode: str,
    divisor: int,
    max_rungs: int,
    max_trials: int,
    concurrent: int,
    workers: int,
) -> None:
    searcher = AdaptiveAshaSearcher(
        {},
        max_length=divisor ** (max_rungs - 1),
        max_trials=max_trials,
        mode=mode,
        divisor=divisor,
        max_rungs=max_rungs,
        max_concurrent_trials=concurrent,
    )
    top = len(searcher.rung_lengths) - 1
    nb = len(searcher.brackets)
    results: list[dict[int, dict[int, float]]] = [{} for _ in range(nb)]  # bracket: rung: id
    bracket_of: dict[int, int] = {}
    rung_of: dict[int, int] = {}
    failed: set[int] = set()

    def promotable(b: int) -> set[int]:
        found = set()
        for rung, reported in results[b].items():
            if rung == top:
                continue
            ranked = sorted(reported, key=lambda t: (reported[t], t))
            for t in ranked[: len(ranked) // divisor]:
                if rung_of[t] == rung and t not in failed:
                    found.add(t)
        return found

    while True:
        flight = searcher.in_flight()
        running = [sum(bracket_of[j.trial_id] == b for j in flight) for b in range(nb)]
        if len(flight) < workers:
            job = searcher.ask()
            if job is None:
                for b, bracket in enumerate(searcher.brackets):
                    if running[b] < bracket.max_concurrent_trials:
                        assert not promotable(b)
                        assert sum(v == b for v in bracket_of.values()) == bracket.max_trials
            else:
                if job.promotion:
                    b = bracket_of[job.trial_id]
                    assert job.trial_id in promotable(b)
                    assert job.rung == rung_of[job.trial_id] + 1
                else:
                    b = searcher._bracket_of[job.trial_id]
                    assert job.rung == searcher.bracket_starts[b]
                    bracket_of[job.trial_id] = b
                assert running[b] < searcher.brackets[b].max_concurrent_trials
                assert job.length == searcher.rung_lengths[job.rung]
                rung_of[job.trial_id] = job.rung
                continue
        if not flight:
            break
        job = data.draw(st.sampled_from(flight))
        if data.draw(st.integers(0, 9)) == 0:
            failed.add(job.trial_id)
            searcher.tell(job.trial_id, None, 0, error="boom")
        else:
            metric = data.draw(st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.8]))
            results[bracket_of[job.trial_id]].setdefault(job.rung, {})[job.trial_id] = metric
            searcher.tell(job.trial_id, metric, job.length)

    assert searcher.done
    records = searcher.trials()
    assert len(records) == sum(b.max_trials for b in searcher.brackets)
    for record in records:
        if record.trial_id in failed:
            assert record.status == "FAILED"
        elif record.rung == top:
            assert record.status == "COMPLETED"
        else:
            assert record.status == "STOPPED_EARLY"


@settings(max_examples=200, deadline=None)
@given(
    top=st.integers(1, 10**6),
    divisor=st.integers(2, 6),
    rungs=st.lists(st.integers(1, 8), min_size=1, max_size=5),
    per_step=st.integers(1, 1000),
)
def test_each_bracket_uses_the_top_of_one_ladder(
    top: int, divisor: int, rungs: list[int], per_step: int
) -> None:
    def steps_of(length: Fraction) -> int:
        return math.ceil(length / per_step)

    searcher = AdaptiveAshaSearcher(
        {}, top, 10**4, divisor=divisor, bracket_rungs=rungs, steps_of=steps_of
    )
    for b, bracket in enumerate(searcher.brackets):
        own = asha_rungs(top, divisor, bracket.rungs, steps_of)
        assert searcher.bracket_rung_lengths(b) == own
        assert own[-1] == top


# --- the searcher keys, validated with the experiment --------------------------------------


def experiment(**searcher: Any) -> Experiment:
    return Experiment.from_mapping(
        {"hyperparameters": {"global_batch_size": 8}, "searcher": {"max_trials": 4, **searcher}}
    )


def test_mode_and_bracket_rungs_are_validated_with_the_experiment() -> None:
    settings_ = experiment(name="adaptive_asha", mode="aggressive", bracket_rungs=[3, 2]).searcher
    assert (settings_.mode, settings_.bracket_rungs) == ("aggressive", (3, 2))
    assert experiment(name="adaptive_asha").searcher.mode == "standard"
    assert experiment(name="adaptive_asha").searcher.bracket_rungs == ()
    for bad, key in (
        ({"mode": "wild"}, "searcher.mode"),
        ({"bracket_rungs": [0]}, "searcher.bracket_rungs"),
        ({"bracket_rungs": "3"}, "searcher.bracket_rungs"),
        ({"bracket_rungs": [65]}, "searcher.bracket_rungs"),
        ({"bracket_rungs": [True]}, "searcher.bracket_rungs"),
    ):
        with pytest.raises(ConfigError) as info:
            experiment(name="adaptive_asha", **bad)
        assert info.value.key == key


@pytest.mark.parametrize(
    ("given", "runs"),
    [
        ("adaptive", "adaptive_asha"),
        ("adaptive_simple", "adaptive_asha"),
        ("async_halving", "asha"),
    ],
)
def test_determineds_older_names_run_their_detflow_searcher(given: str, runs: str) -> None:
    exp = experiment(name=given)
    assert exp.searcher.name == runs
    assert f"searcher.name {given} is Determined's older name: running {runs}" in exp.notices
