"""PbtSearcher's ask/tell behaviour, its state, and the driver copying a child's checkpoint.

No subprocess, no Hydra: the searcher is driven by hand, and :class:`CheckpointingLauncher`
plays trial processes that resume from ``checkpoints/`` as the harness does.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detflow._core.artifacts import TrialStatus
from detflow._core.errors import ConfigError
from detflow._core.experiment import Experiment
from detflow._results.import_determined import import_config, report_lines
from detflow._search.driver import SweepDriver, TrialOutcome
from detflow._search.pbt import PbtSearcher, explore
from detflow._search.searchers import Job, make_searcher
from detflow._search.space import Choice, Interval, Space

SPACE: Space = {
    "lr": Interval(1e-4, 1e-1, log=True),
    "momentum": Interval(0.0, 0.99),
    "width": Interval(4, 64, integer=True),
    "act": Choice(("relu", "tanh", "gelu")),
}


def make(population: int = 8, generations: int = 3, **kwargs: Any) -> PbtSearcher:
    return PbtSearcher(
        kwargs.pop("space", SPACE),
        max_length=generations * 2,
        population_size=population,
        perturb_every=2,
        seed=kwargs.pop("seed", 0),
        **kwargs,
    )


def score(job: Job) -> float:
    """A loss that ranks trials by their learning rate: the larger, the better."""
    return -math.log(float(job.hparams["lr"]))


def generation(searcher: PbtSearcher, metric: Any = score) -> list[Job]:
    """Ask every job of one generation, then tell each its ``metric``."""
    jobs = []
    while (job := searcher.ask()) is not None:
        jobs.append(job)
    for job in jobs:
        searcher.tell(job.trial_id, metric(job), job.length)
    return jobs


def close_to_a_perturbation(child: Any, parent: Any, dim: Interval) -> bool:
    """``child`` is ``parent`` times 0.8 or 1.2, clamped (and rounded) as ``explore`` does."""
    options = []
    for factor in (0.8, 1.2):
        value = min(max(parent * factor, dim.low), dim.high)
        if dim.integer:
            value = min(max(round(parent * factor), math.ceil(dim.low)), math.floor(dim.high))
        options.append(value)
    return any(math.isclose(child, v, rel_tol=1e-12) for v in options)


def test_a_generation_waits_for_every_member_then_the_bottom_copies_the_top() -> None:
    searcher = make(population=8)
    first = generation(searcher)
    assert [(j.trial_id, j.rung, j.length, j.promotion) for j in first] == [
        (i, 0, Fraction(2), False) for i in range(8)
    ]
    ranked = sorted(first, key=lambda j: (score(j), j.trial_id))
    top, bottom = {j.trial_id for j in ranked[:2]}, {j.trial_id for j in ranked[-2:]}
    second = []
    while (job := searcher.ask()) is not None:
        second.append(job)
    children, staying = second[:2], second[2:]  # children first: they copy before parents train
    assert [j.trial_id for j in children] == [8, 9]
    assert all(not j.promotion and j.rung == 1 and j.length == Fraction(4) for j in children)
    assert {j.trial_id for j in staying} == set(range(8)) - bottom
    assert all(j.promotion and j.rung == 1 for j in staying)
    hparams = {j.trial_id: j.hparams for j in first}
    for child in children:
        parent = searcher.parent_of(child.trial_id)
        assert parent in top
        for key, dim in SPACE.items():
            if isinstance(dim, Interval):
                assert close_to_a_perturbation(child.hparams[key], hparams[parent][key], dim)
            else:
                assert child.hparams[key] in dim.values
    # Which slot each child took: the replaced members' (the population keeps its order).
    assert sorted(searcher.state_dict()["pbt"]["members"]) == sorted(
        (set(range(8)) - bottom) | {8, 9}
    )
    assert {t.trial_id for t in searcher.trials() if t.status is TrialStatus.STOPPED_EARLY} == (
        bottom
    )


def test_the_search_ends_after_the_last_generation_with_lineage_and_statuses() -> None:
    searcher = make(population=4, generations=3)
    for _ in range(3):
        generation(searcher)
    assert searcher.done and searcher.ask() is None
    records = searcher.trials()
    assert len(records) == 4 + 1 + 1  # one replaced per generation boundary (4 * 0.25)
    completed = [t for t in records if t.status is TrialStatus.COMPLETED]
    assert len(completed) == 4 and all(t.length_trained == 6 for t in completed)
    assert [searcher.parent_of(t) for t in (4, 5)] != [None, None]
    assert all(searcher.parent_of(t) is None for t in range(4))
    best = searcher.best()
    assert best is not None and best.status is TrialStatus.COMPLETED


def test_failed_members_are_replaced_and_a_population_that_all_failed_ends() -> None:
    searcher = make(population=4)
    jobs = [searcher.ask() for _ in range(4)]
    for job in jobs:
        assert job is not None
        error = "boom" if job.trial_id in (1, 2) else None
        searcher.tell(job.trial_id, None if error else score(job), job.length, error=error)
    nxt = []
    while (job := searcher.ask()) is not None:
        nxt.append(job)
    # Both failed members are replaced, though the bottom quantile is one trial.
    assert [j.trial_id for j in nxt if not j.promotion] == [4, 5]
    assert {searcher.parent_of(4), searcher.parent_of(5)} <= {0, 3}
    assert {j.trial_id for j in nxt if j.promotion} == {0, 3}

    dead = make(population=2, truncation_fraction=0.5)
    for _ in range(2):
        job = dead.ask()
        assert job is not None
        dead.tell(job.trial_id, None, job.length, error="boom")
    assert dead.done and all(t.status is TrialStatus.FAILED for t in dead.trials())


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    lr=st.floats(1e-4, 1e-1),
    momentum=st.floats(0.0, 0.99),
    width=st.integers(4, 64),
)
def test_explore_stays_inside_every_dimension(
    seed: int, lr: float, momentum: float, width: int
) -> None:
    rng = random.Random(seed)
    hparams: dict[str, Any] = {"lr": lr, "momentum": momentum, "width": width, "act": "relu"}
    for _ in range(20):
        hparams = explore(hparams, SPACE, rng, resample_probability=0.5)
        assert 1e-4 <= hparams["lr"] <= 1e-1 and 0.0 <= hparams["momentum"] <= 0.99
        assert isinstance(hparams["width"], int) and 4 <= hparams["width"] <= 64
        assert hparams["act"] in ("relu", "tanh", "gelu")


def test_explore_multiplies_numbers_and_resamples_choices_with_the_probability() -> None:
    rng = random.Random(3)
    start = {"lr": 0.01, "momentum": 0.5, "width": 10, "act": "relu"}
    kept = [explore(start, SPACE, rng, resample_probability=0.0) for _ in range(50)]
    assert {h["act"] for h in kept} == {"relu"}
    assert {round(h["lr"], 12) for h in kept} == {0.008, 0.012}
    assert {h["width"] for h in kept} == {8, 12}
    drawn = [explore(start, SPACE, rng, resample_probability=1.0)["act"] for _ in range(60)]
    assert set(drawn) == {"relu", "tanh", "gelu"}
    halfway = [explore(start, SPACE, rng, resample_probability=0.25)["act"] for _ in range(400)]
    changed = sum(a != "relu" for a in halfway) / len(halfway)
    assert 0.08 < changed < 0.28  # 0.25 resampled, 2 in 3 of those to another value: ~0.17
    assert explore(start, SPACE, rng, perturb_factor=0.5)["width"] in (5, 15)
    edge = explore({"lr": 0.1, "momentum": 0.99, "width": 64, "act": "relu"}, SPACE, rng)
    assert edge["lr"] <= 0.1 and edge["momentum"] <= 0.99 and edge["width"] <= 64


def test_the_same_seed_makes_the_same_search_whatever_order_results_come_in() -> None:
    def run(seed: int, reverse: bool) -> list[tuple[int, int, dict[str, Any]]]:
        searcher = make(population=8, seed=seed)
        seen = []
        for _ in range(3):
            jobs = []
            while (job := searcher.ask()) is not None:
                jobs.append(job)
            for job in reversed(jobs) if reverse else jobs:
                searcher.tell(job.trial_id, score(job), job.length)
            seen += [(j.trial_id, j.rung, j.hparams) for j in jobs]
        return seen

    assert run(5, reverse=False) == run(5, reverse=True)
    assert run(5, reverse=False) != run(6, reverse=False)


def test_the_state_round_trips_through_json_mid_generation() -> None:
    searcher = make(population=8)
    generation(searcher)
    asked = [searcher.ask() for _ in range(5)]  # both children and three members in flight
    for job in asked[:3]:  # a child and two members told; two jobs left in flight
        assert job is not None
        searcher.tell(job.trial_id, score(job), job.length)
    text = json.dumps(searcher.state_dict())
    again = make(population=8)
    again.load_state_dict(json.loads(text))
    assert again.state_dict() == searcher.state_dict()
    assert again.in_flight() == searcher.in_flight()
    assert [j.promotion for j in again.in_flight()] == [True, True]
    assert again.trials() == searcher.trials()
    assert [again.parent_of(t) for t in (8, 9)] == [searcher.parent_of(t) for t in (8, 9)]
    for one in (searcher, again):
        for job in one.in_flight():
            one.tell(job.trial_id, score(job), job.length)
        generation(one)
        generation(one)
    assert again.trials() == searcher.trials() and again.done and searcher.done
    assert again.state_dict() == searcher.state_dict()

    other = make(population=8, truncation_fraction=0.5)
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(json.loads(text))
    asha = make_searcher(
        "asha", space=SPACE, max_length=6, max_trials=4, seed=0, metric="m", smaller_is_better=True
    )
    with pytest.raises(ValueError):
        make().load_state_dict(asha.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "key", "expected"),
    [
        ({"population_size": 1}, "searcher.population_size", "an integer >= 2"),
        ({"perturb_every": 4}, "searcher.perturb_every", "not 1.5 of them"),
        ({"perturb_every": 0}, "searcher.perturb_every", "a positive length"),
        ({"truncation_fraction": 0.6}, "searcher.truncation_fraction", "(0.0, 0.5]"),
        ({"truncation_fraction": 0.1}, "searcher.truncation_fraction", "at least 0.25"),
        ({"resample_probability": 2}, "searcher.resample_probability", "[0.0, 1.0]"),
        ({"perturb_factor": 0}, "searcher.perturb_factor", "(0.0, 0.99]"),
    ],
)
def test_bad_settings_name_their_key(kwargs: dict[str, Any], key: str, expected: str) -> None:
    settings: dict[str, Any] = {"population_size": 4, "perturb_every": 2, **kwargs}
    with pytest.raises(ConfigError) as caught:
        PbtSearcher(SPACE, 6, **settings)
    assert caught.value.key == key and expected in str(caught.value)


def experiment(searcher: dict[str, Any]) -> Experiment:
    return Experiment.from_mapping(
        {
            "hyperparameters": {"global_batch_size": 8},
            "searcher": {"name": "pbt", "max_length": {"epochs": 6}, **searcher},
        }
    )


def test_the_experiment_requires_a_population_and_a_generation_in_max_lengths_unit() -> None:
    exp = experiment({"population_size": 4, "perturb_every": {"epochs": 2}})
    assert exp.searcher.pbt is not None and exp.searcher.pbt.perturb_every.value == 2
    searcher = make_searcher(
        "pbt",
        space=SPACE,
        max_length=6,
        max_trials=exp.searcher.max_trials,
        seed=0,
        metric="validation_loss",
        smaller_is_better=True,
        pbt=exp.searcher.pbt,
    )
    assert isinstance(searcher, PbtSearcher) and len(searcher.rung_lengths) == 3
    with pytest.raises(ConfigError, match=r"searcher.population_size"):
        experiment({"perturb_every": {"epochs": 2}})
    with pytest.raises(ConfigError, match=r"searcher.perturb_every"):
        experiment({"population_size": 4})
    with pytest.raises(ConfigError, match=r"searcher.perturb_every .*max_length's unit \(epochs"):
        experiment({"population_size": 4, "perturb_every": {"batches": 20}})
    with pytest.raises(ConfigError, match=r"searcher.truncation_fraction"):
        experiment({"population_size": 4, "perturb_every": "2 epochs", "truncation_fraction": "x"})


def test_a_determined_pbt_config_imports_as_detflows_pbt() -> None:
    imported = import_config(
        {
            "name": "x",
            "hyperparameters": {
                "global_batch_size": 32,
                "lr": {"type": "log", "minval": -4, "maxval": -1},
            },
            "searcher": {
                "name": "pbt",
                "metric": "val_loss",
                "population_size": 8,
                "num_rounds": 5,
                "length_per_round": {"batches": 200},
                "replace_function": {"truncate_fraction": 0.2},
                "explore_function": {"resample_probability": 0.3, "perturb_factor": 0.1},
            },
        }
    )
    searcher = imported.experiment["searcher"]
    assert (searcher["max_length"], searcher["perturb_every"]) == ("1000 batches", "200 batches")
    assert searcher["max_concurrent_trials"] == 8
    pbt = Experiment.from_mapping(imported.experiment).searcher.pbt
    assert pbt is not None and pbt.population_size == 8 and pbt.perturb_every.value == 200
    assert (pbt.truncation_fraction, pbt.resample_probability, pbt.perturb_factor) == (
        0.2,
        0.3,
        0.1,
    )
    assert not any("not mapped" in line for line in report_lines(imported))


# -- the driver: a child's own copy of its parent's checkpoint ---------------------------------
BATCHES_PER_UNIT = 10


class CheckpointingLauncher:
    """Trial processes that resume from ``checkpoints/`` (``latest.json``), train to the job's
    length (``w`` grows by ``lr`` per batch), checkpoint and write ``result.json``."""

    def __init__(self, sweep_dir: Path, jobs: dict[int, Job]) -> None:
        self.sweep_dir = sweep_dir
        self.jobs = jobs  # trial id -> its job now, filled by overrides_for
        self.started: list[tuple[int, int]] = []  # (trial, the batch it started from)
        self.queue: list[int] = []

    def start(self, trial_id: int, overrides: list[str]) -> None:
        self.queue.append(trial_id)

    def wait(self) -> list[TrialOutcome]:
        ended, self.queue = self.queue, []
        for trial_id in ended:
            self._train(trial_id)
        return [TrialOutcome(t) for t in ended]

    def _train(self, trial_id: int) -> None:
        job = self.jobs[trial_id]
        root = self.sweep_dir / str(trial_id) / "checkpoints"
        batches, w = 0, 0.0
        if (root / "latest.json").exists():
            name = json.loads((root / "latest.json").read_text())["name"]
            state = json.loads((root / name / "state.json").read_text())
            batches, w = state["batches"], state["w"]
        self.started.append((trial_id, batches))
        target = int(job.length * BATCHES_PER_UNIT)
        w += float(job.hparams["lr"]) * (target - batches)
        metric = abs(w - 5.0)
        name = f"{target:010d}"
        (root / name).mkdir(parents=True)
        state = {"batches": target, "w": w, "metric": metric}
        (root / name / "state.json").write_text(json.dumps(state))
        (root / "latest.json").write_text(json.dumps({"name": name, "metric": metric}))
        result = {
            "status": "completed",
            "records": target,
            "batches": target,
            "steps": target,
            "epochs": 0,
            "target_batches": target,
            "batches_per_epoch": None,
            "global_batch_size": 1,
            "aggregation_frequency": 1,
            "length": str(job.length),
            "unit": "batches",
            "metric": metric,
            "best_metric": metric,
            "validation": {"validation_loss": metric},
        }
        (self.sweep_dir / str(trial_id) / "result.json").write_text(json.dumps(result))


def test_the_driver_gives_each_child_its_own_copy_of_its_parents_checkpoint(
    tmp_path: Path,
) -> None:
    space: Space = {"lr": Interval(0.01, 0.5, log=True)}
    searcher = PbtSearcher(space, 30, population_size=4, perturb_every=10, seed=1)
    jobs: dict[int, Job] = {}

    def overrides_for(job: Job) -> list[str]:
        jobs[job.trial_id] = job
        return []

    sweep_dir = tmp_path / "sweep"
    launcher = CheckpointingLauncher(sweep_dir, jobs)
    driver = SweepDriver(searcher, launcher, sweep_dir, overrides_for, 4, "batches")
    summary = driver.run()
    assert len(summary.trials) == 6 and summary.failed == 0
    with open(sweep_dir / "results.csv") as handle:
        rows = {int(r["trial_id"]): r for r in csv.DictReader(handle)}
    assert [rows[t]["parent"] for t in range(4)] == ["", "", "", ""]
    for child in (4, 5):
        parent = searcher.parent_of(child)
        assert parent is not None and rows[child]["parent"] == str(parent)
        start = (child - 3) * 100  # generation boundaries at batches 100 and 200
        copied = json.loads(
            (sweep_dir / str(child) / "checkpoints" / f"{start:010d}" / "state.json").read_text()
        )
        # The child resumed from its parent's checkpoint at the boundary, not from scratch.
        assert (child, start) in launcher.started
        parents_w = json.loads(
            (sweep_dir / str(parent) / "checkpoints" / f"{start:010d}" / "state.json").read_text()
        )["w"]
        assert copied["w"] == parents_w
        # Its own directory: the parent's later checkpoints are not there.
        names = sorted(p.name for p in (sweep_dir / str(child) / "checkpoints").iterdir())
        assert f"{start:010d}" in names and all(int(n) >= start for n in names if n.isdigit())
    assert rows[4]["status"] in ("COMPLETED", "STOPPED_EARLY")
    assert {rows[t]["status"] for t in rows}.issubset({"COMPLETED", "STOPPED_EARLY"})
    assert sum(rows[t]["status"] == "COMPLETED" for t in rows) == 4


class Killed(Exception):
    """The driver's process dies here (the test's stand-in for SIGKILL)."""


class DyingLauncher(CheckpointingLauncher):
    """Dies when asked to start ``trial_id``: after the driver copied its checkpoint."""

    def __init__(self, sweep_dir: Path, jobs: dict[int, Job], trial_id: int) -> None:
        super().__init__(sweep_dir, jobs)
        self.dies_at = trial_id

    def start(self, trial_id: int, overrides: list[str]) -> None:
        if trial_id == self.dies_at:
            raise Killed
        super().start(trial_id, overrides)


def test_a_driver_killed_after_copying_a_childs_checkpoint_resumes_it_from_that_copy(
    tmp_path: Path,
) -> None:
    space: Space = {"lr": Interval(0.01, 0.5, log=True)}

    def run(
        sweep_dir: Path, launcher_for: Callable[[Path, dict[int, Job]], CheckpointingLauncher]
    ) -> CheckpointingLauncher:
        jobs: dict[int, Job] = {}

        def overrides_for(job: Job) -> list[str]:
            jobs[job.trial_id] = job
            return []

        searcher = PbtSearcher(space, 30, population_size=4, perturb_every=10, seed=1)
        launcher = launcher_for(sweep_dir, jobs)
        SweepDriver(searcher, launcher, sweep_dir, overrides_for, 2, "batches").run()
        return launcher

    run(tmp_path / "reference", CheckpointingLauncher)
    with pytest.raises(Killed):
        run(tmp_path / "sweep", lambda d, j: DyingLauncher(d, j, trial_id=4))
    copied = tmp_path / "sweep" / "4" / "checkpoints" / f"{100:010d}"
    assert (copied / "state.json").is_file() and not (
        tmp_path / "sweep" / "4" / "result.json"
    ).exists()
    resumed = run(tmp_path / "sweep", CheckpointingLauncher)
    assert resumed.started[0] == (4, 100)  # in flight first, from its own copy
    with (
        open(tmp_path / "reference" / "results.csv") as a,
        open(tmp_path / "sweep" / "results.csv") as b,
    ):
        want = [{k: v for k, v in r.items() if k != "dir"} for r in csv.DictReader(a)]
        got = [{k: v for k, v in r.items() if k != "dir"} for r in csv.DictReader(b)]
    assert got == want


class LosingLauncher(CheckpointingLauncher):
    """The first job of ``trial_id`` dies before it trains (a signal): no result."""

    def __init__(self, sweep_dir: Path, jobs: dict[int, Job], trial_id: int) -> None:
        super().__init__(sweep_dir, jobs)
        self.loses = trial_id

    def wait(self) -> list[TrialOutcome]:
        ended, self.queue = self.queue, []
        outcomes = []
        for trial_id in ended:
            if trial_id == self.loses:
                self.loses = -1
                outcomes.append(TrialOutcome(trial_id, lost="killed by signal 9"))
                continue
            self._train(trial_id)
            outcomes.append(TrialOutcome(trial_id))
        return outcomes


def test_a_child_that_dies_restarts_from_its_copy_of_the_parents_checkpoint(
    tmp_path: Path,
) -> None:
    space: Space = {"lr": Interval(0.01, 0.5, log=True)}
    searcher = PbtSearcher(space, 20, population_size=4, perturb_every=10, seed=1)
    jobs: dict[int, Job] = {}

    def overrides_for(job: Job) -> list[str]:
        jobs[job.trial_id] = job
        return []

    launcher = LosingLauncher(tmp_path, jobs, trial_id=4)
    summary = SweepDriver(searcher, launcher, tmp_path, overrides_for, 4, "batches").run()
    assert summary.failed == 0 and summary.restarts == {4: 1}
    assert (4, 100) in launcher.started  # the restart resumed from the copy
    assert summary.batches_trained == 4 * 200  # the child's count less the batches it copied
