"""The harness: exact lengths, truthful lines and counters, checkpoints, nan, resume."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

import detflow
from detflow import ConfigError, Run, Trial, TrialError
from tests.support import REPO, read_metrics


class Recorder(Trial):
    """Records what it was given; ``epoch_size`` batches of ``batch`` records each epoch."""

    def __init__(self, run: Run, records: int = 100, sized: bool = True) -> None:
        self.run = run
        self.records = records
        self.sized = sized
        self.seen: list[tuple[int, int]] = []  # (epoch, index in epoch)
        self.epochs_asked: list[int] = []
        self.val_batch = 1

    def training_data(self, epoch: int) -> Iterable[Any]:
        self.epochs_asked.append(epoch)
        size = self.run.per_slot_batch_size
        batches = [
            [(epoch, i)] * min(size, self.records - i * size)
            for i in range(-(-self.records // size))
        ]
        return batches if self.sized else iter(batches)

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        self.seen.append(batch[0])
        return {"loss": 1.0 / len(self.seen)}

    def validation_data(self) -> Iterable[Any]:
        return [[0] * self.val_batch for _ in range(10 // self.val_batch)]

    def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
        return {"loss": float(len(batch))}

    def batch_size(self, batch: Any) -> int:
        return len(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = [tuple(x) for x in state["seen"]]  # type: ignore[misc]


def make_run(tmp_path: Path, max_length: Any, gbs: int = 32, a: int = 1, **extra: Any) -> Run:
    cfg: dict[str, Any] = {
        "hyperparameters": {"global_batch_size": gbs},
        "searcher": {"max_length": max_length},
        "optimizations": {"aggregation_frequency": a},
        **extra,
    }
    return detflow.init(cfg, run_dir=tmp_path)


@pytest.mark.parametrize(
    ("length", "gbs", "a", "batches", "records"),
    [
        ("600 records", 32, 1, 19, 608),
        ("7 steps", 32, 3, 21, 21 * 32),
        ("10 batches", 32, 4, 12, 12 * 32),
        ({"batches": 5}, 8, 1, 5, 40),
    ],
)
def test_fit_trains_exactly_the_converted_length(
    tmp_path: Path, length: Any, gbs: int, a: int, batches: int, records: int
) -> None:
    run = make_run(tmp_path, length, gbs=gbs, a=a, records_per_epoch=10_000)
    trial = Recorder(run, records=10_000)
    result = run.fit(trial)
    assert result.status == "completed"
    assert result.counters.batches == batches == len(trial.seen)
    assert result.counters.records == records
    last = read_metrics(tmp_path)[-1]
    assert (last["kind"], last["batches"], last["steps"]) == ("validation", batches, batches // a)


def test_rounding_is_reported_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = make_run(tmp_path, "600 records", records_per_epoch=10_000)
    with caplog.at_level(logging.INFO, logger="detflow"):
        run.fit(Recorder(run, records=10_000))
    assert (
        "searcher.max_length 600 records -> 19 batches (608 records) at global_batch_size 32"
        in caplog.messages
    )


def test_epochs_repeat_the_data_and_records_count_the_partial_last_batch(tmp_path: Path) -> None:
    run = make_run(tmp_path, "3 epochs", gbs=32)
    trial = Recorder(run, records=100)  # 4 batches an epoch: 32, 32, 32, 4
    result = run.fit(trial)
    assert result.counters.batches == 12
    assert result.counters.records == 300
    assert result.counters.epochs == 3
    assert trial.epochs_asked[-3:] == [0, 1, 2]
    assert [i for _, i in trial.seen] == [0, 1, 2, 3] * 3


def test_records_per_epoch_sets_the_epoch_for_data_without_length(tmp_path: Path) -> None:
    run = make_run(tmp_path, "2 epochs", gbs=10, records_per_epoch=30)
    trial = Recorder(run, records=1000, sized=False)
    result = run.fit(trial)
    assert result.counters.batches == 6
    assert result.counters.epochs == 2
    assert trial.epochs_asked[-2:] == [0, 1]


def test_epochs_without_a_known_epoch_fail_before_training(tmp_path: Path) -> None:
    run = make_run(tmp_path, "2 epochs", gbs=10)
    trial = Recorder(run, records=1000, sized=False)
    with pytest.raises(ConfigError, match="records_per_epoch"):
        run.fit(trial)
    assert trial.seen == []


def test_validation_counts_every_batch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = make_run(tmp_path, "4 batches", gbs=4)
    trial = Recorder(run, records=1000)
    trial.val_batch = 1
    with caplog.at_level(logging.INFO, logger="detflow"):
        run.fit(trial)
    validated = [m for m in caplog.messages if m.startswith("validated:")]
    assert len(validated) == 1
    assert validated[0].startswith("validated: 10 records in ")
    assert ", in 10 batches (" in validated[0]
    trained = [m for m in caplog.messages if m.startswith("trained:")]
    assert trained[0].startswith("trained: 16 records in ") and ", in 4 batches (" in trained[0]


def test_lines_rates_agree_with_counts(tmp_path: Path) -> None:
    run = make_run(tmp_path, "4 batches", gbs=4)
    run.fit(Recorder(run, records=1000))
    for record in read_metrics(tmp_path):
        window = record["window"]
        assert window["seconds"] >= 0
        if record["kind"] == "validation":
            assert (window["records"], window["batches"]) == (10, 10)


def test_validation_and_checkpoint_periods_and_once_at_the_end(tmp_path: Path) -> None:
    run = make_run(
        tmp_path,
        "10 batches",
        gbs=4,
        min_validation_period="3 batches",
        min_checkpoint_period="4 batches",
    )
    run.fit(Recorder(run, records=1000))
    validations = [r["batches"] for r in read_metrics(tmp_path) if r["kind"] == "validation"]
    assert validations == [3, 6, 9, 10]
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert latest["name"] == f"{10:010d}"
    state = json.loads((tmp_path / "checkpoints" / latest["name"] / "state.json").read_text())
    assert state["counters"] == {"records": 40, "batches": 10, "epochs": 0, "batch_in_epoch": 10}
    assert state["steps"] == 10


def test_periods_round_to_whole_optimizer_steps(tmp_path: Path) -> None:
    run = make_run(
        tmp_path, "12 batches", gbs=4, a=4, min_validation_period="5 batches"
    )  # 5 batches -> 8 batches (2 steps)
    run.fit(Recorder(run, records=1000))
    validations = [r["batches"] for r in read_metrics(tmp_path) if r["kind"] == "validation"]
    assert validations == [8, 12]


def test_nan_loss_fails_at_once_naming_the_batch(tmp_path: Path) -> None:
    class NanAt3(Recorder):
        def train_batch(self, batch: Any) -> Mapping[str, Any]:
            super().train_batch(batch)
            return {"loss": math.nan if len(self.seen) == 3 else 1.0}

    run = make_run(tmp_path, "10 batches", gbs=4)
    trial = NanAt3(run, records=1000)
    with pytest.raises(TrialError, match=r"^loss is nan at batch 3$"):
        run.fit(trial)
    assert len(trial.seen) == 3


def test_missing_loss_is_a_clear_error(tmp_path: Path) -> None:
    class NoLoss(Recorder):
        def train_batch(self, batch: Any) -> Mapping[str, Any]:
            return {"accuracy": 1.0}

    run = make_run(tmp_path, "2 batches", gbs=4)
    with pytest.raises(TrialError, match="numeric 'loss'"):
        run.fit(NoLoss(run))


def test_an_existing_checkpoint_is_never_overwritten_without_resume(tmp_path: Path) -> None:
    run = make_run(tmp_path, "2 batches", gbs=4)
    run.fit(Recorder(run))
    again = make_run(tmp_path, "4 batches", gbs=4)
    with pytest.raises(ConfigError, match=r"^resume = False is not valid"):
        again.fit(Recorder(again))


def test_resume_continues_with_exact_counters_to_a_longer_length(tmp_path: Path) -> None:
    run = make_run(tmp_path, "5 batches", gbs=4)
    first = Recorder(run)
    run.fit(first)
    longer = make_run(tmp_path, "9 batches", gbs=4, resume=True)
    second = Recorder(longer)
    result = longer.fit(second)
    assert result.counters.batches == 9
    assert second.seen == [(0, i) for i in range(9)]
    assert [r["batches"] for r in read_metrics(tmp_path) if r["kind"] == "validation"] == [5, 9]


def test_request_stop_checkpoints_at_a_step_boundary_and_resume_matches(tmp_path: Path) -> None:
    class StopAt(Recorder):
        def train_batch(self, batch: Any) -> Mapping[str, Any]:
            out = super().train_batch(batch)
            if len(self.seen) == 5:
                self.run.request_stop()
            return out

    run = make_run(tmp_path / "a", "12 batches", gbs=4, a=3)
    result = run.fit(StopAt(run))
    assert (result.status, result.counters.batches) == ("stopped", 6)
    resumed = make_run(tmp_path / "a", "12 batches", gbs=4, a=3, resume=True)
    trial = Recorder(resumed)
    assert resumed.fit(trial).counters.batches == 12
    straight = make_run(tmp_path / "b", "12 batches", gbs=4, a=3)
    reference = Recorder(straight)
    straight.fit(reference)
    assert trial.seen == reference.seen


def test_checkpoint_keeps_latest_and_best(tmp_path: Path) -> None:
    class Worse(Recorder):
        def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
            return {"loss": float(len(self.seen))}  # grows: the first is best

    run = make_run(
        tmp_path,
        "6 batches",
        gbs=4,
        min_validation_period="2 batches",
        min_checkpoint_period="2 batches",
    )
    run.fit(Worse(run))
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert kept == [f"{2:010d}", f"{6:010d}"]
    best = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert best["name"] == f"{2:010d}"


KILL_SCRIPT = """
import os, signal, sys, json
sys.path.insert(0, {repo!r})
import detflow
kind, run_dir, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
cfg = {{
    "seed": 3,
    "resume": resume,
    "hyperparameters": {{"global_batch_size": 16, "lr": 0.05, "hidden": 32,
                         "records_per_epoch": 96}},
    "searcher": {{"max_length": "4 epochs"}},
    "min_checkpoint_period": "5 batches",
    "min_validation_period": "1 epochs",
}}
run = detflow.init(cfg, run_dir=run_dir)
if kind == "digits":
    from trials.digits import build_digits_trial
    trial = build_digits_trial(run)
else:
    from trials.quadratic import QuadraticTrial
    trial = QuadraticTrial(run)
inner = trial.train_batch
count = [0]
def train_batch(batch):
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return inner(batch)
trial.train_batch = train_batch
result = run.fit(trial)
state = trial.state_dict()
if kind == "digits":
    state = {{k: v.tolist() for k, v in state["model"].items()}}
print(json.dumps({{"batches": result.counters.batches, "records": result.counters.records,
                  "validation": result.validation, "state": state}}))
"""


def _run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _validation_history(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    return [
        (r["batches"], r["metrics"]) for r in read_metrics(run_dir) if r["kind"] == "validation"
    ]


@pytest.mark.parametrize("kind", ["quadratic", "digits"])
def test_sigkill_after_a_checkpoint_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, kind: str
) -> None:
    script = tmp_path / "train_and_maybe_die.py"
    script.write_text(KILL_SCRIPT.format(repo=str(REPO)))
    straight = _run_script(script, kind, str(tmp_path / "straight"), "0", "0")
    assert straight.returncode == 0, straight.stderr
    killed = _run_script(script, kind, str(tmp_path / "killed"), "13", "0")
    assert killed.returncode == -signal.SIGKILL
    resumed = _run_script(script, kind, str(tmp_path / "killed"), "0", "1")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = json.loads(straight.stdout), json.loads(resumed.stdout)
    assert got == expected
    assert _validation_history(tmp_path / "killed") == _validation_history(tmp_path / "straight")
