"""The sweep's own lines, as a person reads them, and the one meaning of "best" behind them.

The sweep driver logs each start and end; the sweeper gives it the batch geometry to write
lengths in whole batches. "Best" is the best ``searcher.metric`` at any validation: the
searcher is told it and ranks by it (after the rung), and the sweep's closing line, ``detflow
summary`` and the run's summary all say it.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from detflow._core.artifacts import RunEnd, TrialResult
from detflow._core.experiment import Experiment
from detflow._hydra.sweeper import _length_formatter
from detflow._search.driver import SweepDriver, TrialOutcome, best_line, length_text
from detflow._search.searchers import AshaSearcher, GridSearcher
from detflow._search.space import Choice, Space


# -- lengths in whole batches, the searcher's unit beside them ---------------------------------
@pytest.mark.parametrize(
    ("config", "length", "hparams", "expected"),
    [
        # an ASHA rung of 5 epochs / 16 at 45 batches an epoch: 14.06 batches -> 15
        ({"records_per_epoch": 1438}, Fraction(5, 16), {}, "15 batches (0.3125 epochs)"),
        ({"records_per_epoch": 1438}, Fraction(5), {}, "225 batches (5 epochs)"),
        # a swept batch size: the job's own geometry
        (
            {"records_per_epoch": 1438},
            Fraction(5),
            {"hyperparameters.global_batch_size": 64},
            "115 batches (5 epochs)",
        ),
        (
            {"searcher": {"max_length": "600 records"}},
            Fraction(600),
            {},
            "19 batches (600 records)",
        ),
        (
            {"searcher": {"max_length": "7 steps"}, "optimizations": {"aggregation_frequency": 3}},
            Fraction(7),
            {},
            "21 batches (7 steps)",
        ),
        ({"searcher": {"max_length": "15 batches"}}, Fraction(15, 4), {}, "4 batches"),
        ({"searcher": {"max_length": "1 batches"}}, Fraction(1), {}, "1 batch"),
        # epochs the trial's data alone can measure: the unit, never a fraction of a batch
        ({}, Fraction(1, 4), {}, "0.25 epochs"),
        ({}, Fraction(1), {}, "1 epoch"),
    ],
)
def test_a_job_length_reads_in_whole_batches_with_its_unit(
    config: dict[str, Any], length: Fraction, hparams: dict[str, Any], expected: str
) -> None:
    cfg: dict[str, Any] = {
        "hyperparameters": {"global_batch_size": 32},
        "searcher": {"max_length": "5 epochs"},
    }
    for key, value in config.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    formatter = _length_formatter(Experiment.from_mapping(cfg))
    assert formatter(length, hparams) == expected


@pytest.mark.parametrize(
    ("batches", "length", "unit", "expected"),
    [
        (64, Fraction(2), "epochs", "64 batches (2 epochs)"),
        (41, Fraction(1, 4), "epochs", "41 batches (0.25 epochs)"),
        (3, Fraction(2, 3), "epochs", "3 batches (0.6667 epochs)"),
        (4, Fraction(183, 50), "batches", "4 batches"),
        (19, Fraction(600), "records", "19 batches (600 records)"),
        (None, Fraction(7, 3), "steps", "2.333 steps"),
    ],
)
def test_length_text(batches: int | None, length: Fraction, unit: str, expected: str) -> None:
    assert length_text(batches, length, unit) == expected


# -- the driver's lines --------------------------------------------------------------------------
class Instant:
    """A launcher whose trials end at once, each with a result.json of the given figures."""

    def __init__(self, sweep: Path, results: dict[int, tuple[float, float]]) -> None:
        self.sweep, self.results = sweep, results
        self.started: list[int] = []

    def start(self, trial_id: int, overrides: list[str]) -> None:
        last, best = self.results[trial_id]
        (self.sweep / str(trial_id)).mkdir(parents=True, exist_ok=True)
        TrialResult(
            RunEnd.COMPLETED, 2048, 64, 64, 2, 64, 32, 32, 1, Fraction(2), "epochs", last, best,
            {"validation_loss": last},
        ).write(self.sweep / str(trial_id))  # fmt: skip
        self.started.append(trial_id)

    def wait(self) -> list[TrialOutcome]:
        ended, self.started = self.started, []
        return [TrialOutcome(t) for t in ended]


def test_the_driver_writes_short_numbers_whole_batches_and_the_best_it_was_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    space: Space = {
        "hyperparameters.lr": Choice((0.1234567891, 0.05)),
        "hyperparameters.act": Choice(("relu",)),
    }
    searcher = GridSearcher(space, max_length=2)
    # trial 0 ends worse than trial 1 but was better on the way: by its best, it is the best
    launcher = Instant(tmp_path, {0: (0.15239160548387132, 0.0421), 1: (0.1, 0.09)})
    driver = SweepDriver(
        searcher,
        launcher,
        tmp_path,
        lambda job: [],
        1,
        "epochs",
        length_text=lambda length, hparams: length_text(int(length * 32), length, "epochs"),
    )
    with caplog.at_level(logging.INFO, logger="detflow.sweep"):
        summary = driver.run()
    lines = [r.getMessage() for r in caplog.records if r.name == "detflow.sweep"]
    assert "starting trial 0 to 64 batches (2 epochs) lr=0.1235 act=relu" in lines  # space order
    assert "trial 0 reached 64 batches (2 epochs): validation_loss=0.1524" in lines
    assert summary.best is not None and summary.best.trial_id == 0
    assert (summary.best.best_metric, summary.best.last_metric) == (0.0421, 0.15239160548387132)
    assert best_line(
        0, summary.best.hparams, "validation_loss", 0.0421, "64 batches", list(space)
    ) == ("best: trial 0 (lr=0.1235 act=relu), validation_loss 0.0421, trained 64 batches")


# -- the searcher's "best" -------------------------------------------------------------------------
def test_the_searcher_ranks_by_rung_then_the_best_it_was_told() -> None:
    searcher = AshaSearcher({}, max_length=4, max_trials=3, divisor=2, max_rungs=2)
    told = {  # (trial, rung) -> (metric at the rung's end, best at any validation so far)
        (0, 0): (0.5, 0.5),
        (1, 0): (0.6, 0.2),  # stopped at rung 0 with the best figure of all: still below rung 1
        (0, 1): (0.9, 0.45),  # promoted; got worse by its end, its best is from before
        (2, 0): (0.7, 0.7),
    }
    while (job := searcher.ask()) is not None:
        metric, so_far = told[job.trial_id, job.rung]
        searcher.tell(job.trial_id, metric, job.length, best=so_far)
    records = {r.trial_id: r for r in searcher.trials()}
    assert {i: (r.best_metric, r.last_metric) for i, r in records.items()} == {
        0: (0.45, 0.9),
        1: (0.2, 0.6),
        2: (0.7, 0.7),
    }
    best = searcher.best()
    assert best is not None and best.trial_id == 0  # the furthest rung first
    again = AshaSearcher({}, max_length=4, max_trials=3, divisor=2, max_rungs=2)
    state = searcher.state_dict()
    again.load_state_dict(state)
    assert again.trials() == searcher.trials()
    for trial in state["trials"]:  # a state saved before bests were: the best rung end
        del trial["best"]
    again.load_state_dict(state)
    assert {r.trial_id: r.best_metric for r in again.trials()} == {0: 0.5, 1: 0.6, 2: 0.7}


def test_the_searcher_saves_the_search_order_of_its_keys() -> None:
    space: Space = {"hyperparameters.lr": Choice((0.1,)), "hyperparameters.act": Choice(("relu",))}
    state = GridSearcher(space, max_length=1).state_dict()
    assert state["keys"] == ["hyperparameters.lr", "hyperparameters.act"]  # not sorted
