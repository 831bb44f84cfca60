"""bohb (ASHA's promotions, TPE proposals, a guard against misleading rungs), the tpe sampler
of asha / adaptive_asha, and searcher.min_length."""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detflow._core.errors import ConfigError
from detflow._core.experiment import Experiment
from detflow._search.rungs import win_rate
from detflow._search.searchers import (
    AdaptiveAshaSearcher,
    AshaSearcher,
    BohbSearcher,
    Job,
    RandomSearcher,
    Searcher,
    adaptive_brackets,
    asha_rungs,
    make_searcher,
)
from detflow._search.space import Choice, Interval, Space
from detflow._search.tpe import DensityModel, TpeSettings, min_observations, propose

XY: Space = {"x": Interval(0.0, 1.0), "y": Interval(0.0, 1.0)}
OPTIMUM = (0.3, 0.7)


def distance(hparams: dict[str, Any]) -> float:
    return math.hypot(hparams["x"] - OPTIMUM[0], hparams["y"] - OPTIMUM[1])


def run(
    searcher: Searcher,
    metric: Callable[[Job], float],
    *,
    workers: int = 4,
    seed: int = 0,
    stop_after: int | None = None,
) -> list[Job]:
    """Ask and tell until done (or ``stop_after`` results), results in a seeded random order."""
    rng = random.Random(seed)
    running: list[Job] = []
    asked: list[Job] = []
    told = 0
    while stop_after is None or told < stop_after:
        while len(running) < workers and (job := searcher.ask()) is not None:
            running.append(job)
            asked.append(job)
        if not running:
            break
        job = running.pop(rng.randrange(len(running)))
        searcher.tell(job.trial_id, metric(job), job.length)
        told += 1
    return asked


def new_trials(jobs: list[Job]) -> list[Job]:
    return [job for job in jobs if not job.promotion]


# --- the density model ---------------------------------------------------------------------


def test_proposals_concentrate_on_the_good_region_after_60_results() -> None:
    """After 60 full-length results, new proposals lie far nearer the optimum than random
    search's draws (with its own share of random proposals kept)."""
    ratios = []
    for seed in range(3):
        medians = []
        searchers: list[Searcher] = [
            BohbSearcher(XY, 10, max_trials=100, max_rungs=1, seed=seed),
            RandomSearcher(XY, 10, max_trials=100, seed=seed),
        ]
        for searcher in searchers:
            jobs = run(searcher, lambda j: distance(j.hparams), workers=1)
            medians.append(statistics.median(distance(j.hparams) for j in jobs[60:]))
        ratios.append(medians[0] / medians[1])
    assert max(ratios) < 0.6, ratios  # measured: about 0.25-0.35


def test_the_model_handles_log_integer_and_categorical_dimensions() -> None:
    space: Space = {
        "lr": Interval(1e-5, 1e-1, log=True),
        "units": Interval(1, 64, integer=True),
        "opt": Choice(("sgd", "adam", ["nested", 1])),
        "fixed": Choice((7,)),
    }

    def loss(h: dict[str, Any]) -> float:
        lr_term = (math.log10(h["lr"]) + 3) ** 2
        return float(lr_term + abs(h["units"] - 16) / 16 + (0.0 if h["opt"] == "adam" else 1.0))

    rng = random.Random(0)
    observed = [RandomSearcher(space, 1, 200, seed=1)._new_hparams(i) for i in range(80)]
    ranked = sorted((h for h in observed if h is not None), key=loss)
    model = DensityModel(space, ranked, TpeSettings(random_fraction=0.0))
    assert model.fitted and min_observations(space) == 8  # 3 searched dimensions
    points = [model.propose(rng) for _ in range(40)]
    for p in points:
        assert list(p) == ["fixed", "lr", "opt", "units"] and p["fixed"] == 7
        assert 1e-5 <= p["lr"] <= 1e-1 and isinstance(p["units"], int) and 1 <= p["units"] <= 64
        assert p["opt"] in space["opt"].values  # type: ignore[union-attr]
    proposed = statistics.median(loss(p) for p in points)
    drawn = statistics.median(loss(h) for h in observed if h is not None)
    assert proposed < 0.5 * drawn, (proposed, drawn)
    assert sum(p["opt"] == "adam" for p in points) > 20
    # A choice value read back from JSON (a list for a tuple) is the same category.
    back = json.loads(json.dumps(ranked))
    assert DensityModel(space, back, TpeSettings()).ratio(back[0]) == model.ratio(ranked[0])


def test_too_few_results_or_the_random_share_give_random_draws() -> None:
    few = DensityModel(XY, [{"x": 0.1, "y": 0.2}] * 5, TpeSettings())
    assert not few.fitted and propose(few, random.Random(0)) is None
    ranked = [{"x": i / 30, "y": i / 30} for i in range(30)]
    always = DensityModel(XY, ranked, TpeSettings(random_fraction=1.0))
    assert all(propose(always, random.Random(s)) is None for s in range(20))
    some = DensityModel(XY, ranked, TpeSettings(random_fraction=0.5))
    drawn = [propose(some, random.Random(s)) is None for s in range(200)]
    assert 70 < sum(drawn) < 130


# --- the searcher --------------------------------------------------------------------------


def test_state_round_trips_through_json_and_a_restored_searcher_proposes_the_same() -> None:
    def metric(job: Job) -> float:
        return distance(job.hparams) + 1 / float(job.length)

    original = BohbSearcher(XY, 27, max_trials=60, divisor=3, max_rungs=4, seed=5)
    run(original, metric, stop_after=40)
    state = json.loads(json.dumps(original.state_dict()))
    assert state["start_rungs"] and "rung_trust" in state
    restored = BohbSearcher(XY, 27, max_trials=60, divisor=3, max_rungs=4, seed=5)
    restored.load_state_dict(state)
    assert restored.state_dict() == original.state_dict()
    assert restored.in_flight() == original.in_flight()
    for searcher in (original, restored):  # finish the jobs in flight the same way
        for job in searcher.in_flight():
            searcher.tell(job.trial_id, metric(job), job.length)
    rest = [run(s, metric, seed=9) for s in (original, restored)]
    assert rest[0] == rest[1] and len(new_trials(rest[0])) > 5
    assert original.trials() == restored.trials()
    other = BohbSearcher(XY, 27, max_trials=60, divisor=3, max_rungs=4, seed=6)
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="start rung"):
        restored.load_state_dict({**state, "start_rungs": []})


def test_a_bohb_sweep_resumes_with_more_max_trials_as_asha_does() -> None:
    """Raising ``max_trials`` on resume changes how often bohb hedges from then on, never
    what it decided: the saved state loads and the search goes on."""
    small = BohbSearcher(XY, 27, max_trials=27, divisor=3, seed=1)
    run(small, lambda j: distance(j.hparams))
    assert small.done and small.hedge_every() == 3
    larger = BohbSearcher(XY, 27, max_trials=400, divisor=3, seed=1)
    assert larger.hedge_every() == 12
    larger.load_state_dict(json.loads(json.dumps(small.state_dict())))
    loaded, saved = larger.trials(), small.trials()
    assert [(t.hparams, t.best_metric) for t in loaded] == [
        (t.hparams, t.best_metric) for t in saved
    ]
    assert not larger.done  # a trial stopped early in the small search may be promoted now
    assert len(new_trials(run(larger, lambda j: distance(j.hparams)))) == 400 - 27


def misleading(job: Job) -> float:
    """Rung 0 (1 epoch) ranks configurations against their end: the best look worst."""
    final = distance(job.hparams) ** 2
    noise = random.Random(f"{job.trial_id}:{job.rung}").gauss(0, 0.01)
    return (-final if job.length == 1 else final) + noise


def best_final(searcher: Searcher) -> float:
    top = len(searcher.rung_lengths) - 1
    return min(distance(t.hparams) ** 2 for t in searcher.trials() if t.rung == top)


def test_bohb_ends_near_the_optimum_where_the_bottom_rung_misleads_and_asha_does_not() -> None:
    ladder: dict[str, Any] = {"max_length": 9, "max_trials": 81, "divisor": 3, "min_length": 1}
    bohb, asha = [], []
    for seed in range(4):
        searcher = BohbSearcher(XY, **ladder, seed=seed)
        run(searcher, misleading, seed=seed)
        bohb.append(best_final(searcher))
        trust = searcher.rung_trust()[0]
        # The trials rung 0 selected lose at rung 1 to those it never judged.
        assert trust.rung == 0 and not trust.useful and trust.win_rate < 0.5, trust
        assert searcher.start_rung() == 1  # new trials skip the misleading rung
        plain = AshaSearcher(XY, **ladder, seed=seed)
        run(plain, misleading, seed=seed)
        asha.append(best_final(plain))
    # Measured over 20 seeds: bohb median 0.007 (worst 0.043), asha median 0.25 (best 0.042):
    # a 1-epoch rung that misleads throws the good configurations away.
    assert statistics.median(bohb) < 0.02 and max(bohb) < 0.05, bohb
    assert statistics.median(asha) > 0.1, asha
    assert all(b < a for b, a in zip(bohb, asha, strict=True)), (bohb, asha)


def test_bohb_keeps_trusting_a_rung_that_ranks_as_the_top_does() -> None:
    def faithful(job: Job) -> float:
        noise = random.Random(f"{job.trial_id}:{job.rung}").gauss(0, 0.02 / float(job.length))
        return distance(job.hparams) ** 2 + noise

    kept = 0
    for seed in range(8):
        searcher = BohbSearcher(
            XY, 27, max_trials=120, divisor=3, min_length=1, random_fraction=1.0, seed=seed
        )
        run(searcher, faithful, seed=seed)
        trust = searcher.rung_trust()
        assert trust and trust[0].rung == 0 and trust[0].win_rate > 0.5, trust  # it tested it
        starts = searcher.state_dict()["start_rungs"]
        assert starts.count(1) >= BohbSearcher.MIN_HEDGED  # the hedges
        if searcher.start_rung() == 0:
            kept += 1
            assert starts.count(0) > 0.8 * len(starts), starts  # the rest start at rung 0
    # One test of 8 against 8 trials: every one finds the promoted trials better (win rates
    # 0.61 to 0.95 here), and 6 of these 8 searches keep the rung (the other two: within 1 SE).
    assert kept >= 6, kept


def test_bohb_promotes_as_asha_does_while_rungs_are_trusted() -> None:
    """Same promotions, only the proposals differ: with every proposal random and no short
    rung to test (two rungs: a hedge would train to max_length), bohb is asha."""
    ladder: dict[str, Any] = {"max_length": 16, "max_trials": 40, "divisor": 2, "max_rungs": 2}
    bohb = BohbSearcher(XY, **ladder, random_fraction=1.0, seed=3)
    asha = AshaSearcher(XY, **ladder, seed=3)
    assert run(bohb, lambda j: distance(j.hparams)) == run(asha, lambda j: distance(j.hparams))


def test_the_tpe_sampler_of_asha_and_adaptive_asha_proposes_from_the_model() -> None:
    def metric(job: Job) -> float:
        return distance(job.hparams)

    for seed in range(2):
        medians = []
        for sampler in ("tpe", "random"):
            searcher = AdaptiveAshaSearcher(
                XY, 16, max_trials=120, divisor=2, max_rungs=3, sampler=sampler, seed=seed
            )
            jobs = new_trials(run(searcher, metric, seed=seed))
            medians.append(statistics.median(distance(j.hparams) for j in jobs[60:]))
        assert medians[0] < 0.7 * medians[1], medians
    asha = AshaSearcher(XY, 16, max_trials=80, max_rungs=2, sampler="tpe", seed=1)
    jobs = new_trials(run(asha, metric))
    assert asha.density_model() is not None and asha.density_model().fitted  # type: ignore[union-attr]
    assert statistics.median(distance(j.hparams) for j in jobs[40:]) < 0.2


def test_a_tpe_sampler_changes_the_saved_settings_a_random_one_does_not() -> None:
    plain = AshaSearcher(XY, 16, 8).state_dict()["settings"]
    assert "sampler" not in plain  # states saved before samplers existed still load
    tpe = AshaSearcher(XY, 16, 8, sampler="tpe").state_dict()["settings"]
    assert tpe["sampler"] == "tpe" and tpe["random_fraction"] == 1 / 3


def test_bohb_hedges_are_random_draws_and_the_rung_test_compares_random_draws_only() -> None:
    """A trial the model proposed is better wherever it started: the test of a rung compares
    only the trials drawn at random, hedges (always random draws) against promoted ones."""

    def faithful(job: Job) -> float:
        return distance(job.hparams) ** 2 + 0.01 / float(job.length)

    searcher = BohbSearcher(XY, 27, max_trials=400, divisor=3, min_length=1, seed=2)
    assert searcher.hedge_every() == BohbSearcher.HEDGE_EVERY
    run(searcher, faithful, seed=2)
    state = searcher.state_dict()
    starts, draws = state["start_rungs"], state["random_draws"]
    assert len(draws) == len(starts) == len(searcher.trials())
    # One new trial in 12 hedges: the 12th, then one after each 12 more (ids 11, 24, 37, ...).
    hedges = [i for i, start in enumerate(starts) if start == 1][: BohbSearcher.MIN_HEDGED]
    assert hedges == [13 * k - 2 for k in range(1, 9)] and all(draws[i] for i in hedges)
    assert not all(draws) and sum(draws) < 0.6 * len(draws)  # the rest mostly from the model
    trust = searcher.rung_trust()[0]
    assert (trust.rung, trust.promoted, trust.direct) == (0, 8, 8), trust

    def expected_rate(draws: list[bool]) -> float:
        """The win rate at rung 1 of the first 8 random draws promoted from rung 0 over the
        first 8 that started at rung 1, by trial id."""
        at_1 = [(t["trial_id"], dict(t["metrics"]).get(1)) for t in state["trials"]]
        kinds = [
            [m for i, m in at_1 if m is not None and draws[i] and starts[i] == s] for s in (0, 1)
        ]
        return win_rate(kinds[0][:8], kinds[1][:8])  # losses: smaller is better

    assert trust.win_rate == expected_rate(draws)
    # Mark the first promoted trial a model proposal: the test now reads the ninth instead.
    first = next(
        t["trial_id"]
        for t in state["trials"]
        if starts[t["trial_id"]] == 0 and 1 in dict(t["metrics"])
    )
    marked = [d and i != first for i, d in enumerate(draws)]
    flipped = BohbSearcher(XY, 27, max_trials=400, divisor=3, min_length=1, seed=2)
    flipped.load_state_dict({**state, "random_draws": marked})
    assert flipped.rung_trust()[0].win_rate == expected_rate(marked) != trust.win_rate
    with pytest.raises(ValueError, match="random draws"):
        flipped.load_state_dict({k: v for k, v in state.items() if k != "random_draws"})
    with pytest.raises(ValueError, match="true/false"):
        flipped.load_state_dict({**state, "random_draws": [1] * len(draws)})


def test_bohb_fits_its_model_from_min_good_plus_two_results() -> None:
    space: Space = {f"x{i}": Interval(0.0, 1.0) for i in range(7)}
    settings = TpeSettings(min_good=BohbSearcher.MIN_GOOD)
    assert min_observations(space) == 16 and min_observations(space, settings) == 5
    ranked = [{key: i / 10 for key in space} for i in range(5)]
    assert DensityModel(space, ranked, settings).fitted
    assert not DensityModel(space, ranked[:4], settings).fitted
    assert not DensityModel(space, ranked * 3, TpeSettings()).fitted  # 15 < 16
    assert BohbSearcher(space, 27, 400).tpe.min_good == BohbSearcher.MIN_GOOD
    assert AshaSearcher(space, 27, 400, sampler="tpe").tpe.min_good is None
    with pytest.raises(ValueError, match="min_good"):
        TpeSettings(min_good=1)


# --- min_length ----------------------------------------------------------------------------


def test_min_length_is_the_bottom_rung_and_divisor_spaces_the_rest() -> None:
    assert asha_rungs(52, 3, 5, min_length=1) == tuple(map(Fraction, (1, 3, 9, 27, 52)))
    assert asha_rungs(27, 3, 5, min_length=1) == tuple(map(Fraction, (1, 3, 9, 27)))
    assert asha_rungs(8, 2, 5, min_length=8) == (Fraction(8),)
    assert asha_rungs(52, 3, 2, min_length=1) == (Fraction(27), Fraction(52))  # max_rungs caps
    searcher = AshaSearcher(XY, 52, 81, divisor=3, max_rungs=5, min_length=4)
    assert searcher.rung_lengths == tuple(map(Fraction, (4, 12, 36, 52)))
    assert searcher.ask().length == 4  # type: ignore[union-attr]
    # Without it, the bottom rung comes from max_rungs, as before.
    assert AshaSearcher(XY, 256, 81).rung_lengths == asha_rungs(256, 3, 4)


def test_min_length_sets_the_brackets_of_adaptive_asha() -> None:
    # 1, 3, 9, 27, 52: five rungs (Determined's cap from max_length alone counts four).
    assert [b.rungs for b in adaptive_brackets(52, 100, divisor=3, min_length=1)] == [5, 4, 3]
    assert [b.rungs for b in adaptive_brackets(52, 100, divisor=3)] == [4, 3, 2]
    assert [b.rungs for b in adaptive_brackets(52, 100, divisor=3, min_length=9)] == [3, 2]
    conservative = AdaptiveAshaSearcher(XY, 52, 100, mode="conservative", divisor=3, min_length=4)
    assert conservative.rung_lengths == tuple(map(Fraction, (4, 12, 36, 52)))
    # The most conservative bracket trains every trial to max_length.
    assert conservative.bracket_rung_lengths(len(conservative.brackets) - 1) == (Fraction(52),)
    assert conservative.bracket_rung_lengths(0)[0] == 4


@pytest.mark.parametrize(
    ("searcher", "expected"),
    [
        ({"min_length": "2 batches"}, "in searcher.max_length's unit (epochs)"),
        ({"min_length": {"epochs": 9}}, "up to searcher.max_length (8 epochs)"),
        ({"min_length": 0}, "searcher.min_length"),
        ({"sampler": "bayes"}, "one of random, tpe"),
        ({"random_fraction": 1.5}, "a number from 0 to 1"),
        ({"name": "boh"}, "bohb"),
    ],
)
def test_bad_keys_are_refused_naming_the_key(searcher: dict[str, Any], expected: str) -> None:
    cfg = {
        "hyperparameters": {"global_batch_size": 8},
        "searcher": {"name": "bohb", "max_trials": 4, "max_length": {"epochs": 8}, **searcher},
    }
    with pytest.raises(ConfigError) as raised:
        Experiment.from_mapping(cfg)
    key = next(iter(searcher))
    assert f"searcher.{key}" in str(raised.value) and expected in str(raised.value)


@pytest.mark.parametrize(
    ("name", "chosen", "expected"),
    [
        ("asha", None, "random"),
        ("adaptive_asha", None, "tpe"),
        ("adaptive", None, "tpe"),  # Determined's older name
        ("adaptive_asha", "random", "random"),  # Determined's own proposals, when asked
        ("asha", "tpe", "tpe"),
    ],
)
def test_each_searcher_proposes_with_its_own_default_sampler(
    name: str, chosen: str | None, expected: str
) -> None:
    searcher: dict[str, Any] = {"name": name, "max_trials": 9, "max_length": {"epochs": 9}}
    if chosen is not None:
        searcher["sampler"] = chosen
    cfg = {"hyperparameters": {"global_batch_size": 8}, "searcher": searcher}
    assert Experiment.from_mapping(cfg).searcher.sampler == expected
    built = make_searcher(
        name,
        space=XY,
        max_length=9,
        max_trials=9,
        seed=0,
        metric="loss",
        smaller_is_better=True,
        sampler=chosen,
    )
    assert isinstance(built, AshaSearcher) and built.sampler == expected


def test_the_new_keys_validate_and_reach_make_searcher() -> None:
    cfg = {
        "hyperparameters": {"global_batch_size": 8},
        "searcher": {
            "name": "bohb",
            "max_trials": 4,
            "max_length": {"epochs": 8},
            "min_length": {"epochs": 2},
            "random_fraction": 0.5,
        },
    }
    validated = Experiment.from_mapping(cfg).searcher
    assert validated.min_length is not None and validated.min_length.value == 2
    assert validated.sampler == "tpe" and validated.random_fraction == 0.5  # bohb's model
    assert (
        Experiment.from_mapping({**cfg, "searcher": {"max_length": "3 epochs"}}).searcher.min_length
        is None
    )
    searcher = make_searcher(
        "bohb",
        space=XY,
        max_length=8,
        max_trials=4,
        seed=0,
        metric="loss",
        smaller_is_better=True,
        divisor=2,
        min_length=validated.min_length.value,
        random_fraction=validated.random_fraction,
    )
    assert isinstance(searcher, BohbSearcher) and searcher.rung_lengths == tuple(
        map(Fraction, (2, 4, 8))
    )
    assert searcher.tpe.random_fraction == 0.5
    with pytest.raises(ConfigError, match=r"searcher\.sampler"):
        make_searcher(
            "asha",
            space=XY,
            max_length=8,
            max_trials=4,
            seed=0,
            metric="loss",
            smaller_is_better=True,
            sampler="grid",
        )
    with pytest.raises(ConfigError, match=r"searcher\.min_length"):
        make_searcher(
            "asha",
            space=XY,
            max_length=8,
            max_trials=4,
            seed=0,
            metric="loss",
            smaller_is_better=True,
            min_length=9,
        )


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    workers=st.integers(1, 4),
    cut=st.integers(1, 70),
    misleads=st.booleans(),
    kind=st.sampled_from(["bohb", "adaptive_asha"]),
)
def test_a_search_resumed_from_json_anywhere_decides_as_an_uninterrupted_one(
    seed: int, workers: int, cut: int, misleads: bool, kind: str
) -> None:
    """A fresh searcher loaded from the JSON state at any point asks exactly the same jobs
    (bohb, and adaptive_asha with the tpe sampler)."""

    def make() -> Searcher:
        if kind == "bohb":
            return BohbSearcher(XY, 9, max_trials=40, divisor=3, min_length=1, seed=seed)
        return AdaptiveAshaSearcher(
            XY, 9, max_trials=40, divisor=3, min_length=1, sampler="tpe", seed=seed
        )

    def metric(job: Job) -> float:
        return misleading(job) if misleads else distance(job.hparams) + 1 / float(job.length)

    def drive(cut_at: int | None) -> list[Job]:
        searcher = make()
        rng = random.Random(seed)
        running: list[Job] = []
        asked: list[Job] = []
        told = 0
        while True:
            while len(running) < workers and (job := searcher.ask()) is not None:
                running.append(job)
                asked.append(job)
            if not running:
                return asked
            job = running.pop(rng.randrange(len(running)))
            searcher.tell(job.trial_id, metric(job), job.length)
            told += 1
            if told == cut_at:
                state = json.loads(json.dumps(searcher.state_dict()))
                searcher = make()
                searcher.load_state_dict(state)
                assert [j.trial_id for j in searcher.in_flight()] == [j.trial_id for j in running]

    assert drive(cut) == drive(None)
