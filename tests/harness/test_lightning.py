"""``detflow.lightning.fit`` in this process: a LightningModule under detflow's exact target,
validation periods, aggregation, checkpoints and stop requests (the scripts' runs, ASHA,
SIGKILL and two slots: tests/e2e/test_lightning.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

import detflow
from detflow import ConfigError, Run
from detflow.lightning import OWNED_TRAINER_ARGUMENTS, fit
from tests.lightning_support import QUIET, TinyRegression, experiment, loaders
from tests.support import read_metrics


def make_run(run_dir: Path, **overrides: Any) -> Run:
    return detflow.init(dataclasses.asdict(experiment(**overrides)), run_dir=run_dir)


def validations(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    return [
        (r["batches"], r["metrics"]) for r in read_metrics(run_dir) if r["kind"] == "validation"
    ]


def train(run: Run, *callbacks: pl.Callback) -> tuple[detflow.FitResult, TinyRegression]:
    torch.manual_seed(run.seed)
    module = TinyRegression(float(run.hparams["lr"]))
    train_data, validation_data = loaders(run)
    result = fit(run, module, train_data, validation_data, callbacks=list(callbacks), **QUIET)
    return result, module


def test_trains_exactly_30_batches_validating_at_10_20_30_with_its_val_loss(
    tmp_path: Path,
) -> None:
    result, module = train(make_run(tmp_path))
    assert (result.status.value, result.counters.batches, result.counters.records) == (
        "completed",
        30,
        120,
    )
    assert result.counters.epochs == 3  # 10 batches an epoch
    assert [b for b, _ in validations(tmp_path)] == [10, 20, 30]
    assert all(set(m) == {"val_loss"} for _, m in validations(tmp_path))  # not renamed
    assert result.validation["val_loss"] == validations(tmp_path)[-1][1]["val_loss"]
    assert module.optimizer_steps == 30
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert saved[-1] == f"{30:010d}"


def test_aggregation_frequency_is_lightnings_gradient_accumulation(tmp_path: Path) -> None:
    result, module = train(make_run(tmp_path, optimizations={"aggregation_frequency": 2}))
    assert (result.counters.batches, module.optimizer_steps) == (30, 15)
    assert result.counters.steps(2) == 15
    # the training loss reported is the loss computed, not Lightning's share of it (loss / 2)
    reports = [r for r in read_metrics(tmp_path) if r["kind"] == "train"]
    start = 0
    for report in reports:
        end = report["batches"]
        window = module.losses[start:end]
        assert report["metrics"]["loss"] == pytest.approx(sum(window) / len(window))
        start = end
    assert start == 30


def test_a_stop_request_checkpoints_at_a_step_and_the_rerun_continues_exactly(
    tmp_path: Path,
) -> None:
    straight, _ = train(make_run(tmp_path / "straight"))

    class StopAt7(pl.Callback):
        def __init__(self, run: Run) -> None:
            self.run = run

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 7:
                self.run.request_stop()  # as a pre-emption signal does

    run = make_run(tmp_path / "stopped")
    stopped, _ = train(run, StopAt7(run))
    assert (stopped.status.value, stopped.counters.batches) == ("stopped", 7)
    assert [b for b, _ in validations(tmp_path / "stopped")] == []  # none was due
    resumed, _ = train(make_run(tmp_path / "stopped", resume=True))
    assert resumed.status.value == "completed"
    assert validations(tmp_path / "stopped") == validations(tmp_path / "straight")
    assert resumed.validation == straight.validation and resumed.best_metric == straight.best_metric


def test_perform_initial_validation_reports_the_untrained_model_at_batch_0(
    tmp_path: Path,
) -> None:
    result, _ = train(make_run(tmp_path, perform_initial_validation=True))
    assert [b for b, _ in validations(tmp_path)] == [0, 10, 20, 30]
    assert result.counters.batches == 30


@pytest.mark.parametrize("name", ["max_steps", "accumulate_grad_batches", "val_check_interval"])
def test_a_trainer_argument_detflow_sets_is_refused_naming_its_key(
    tmp_path: Path, name: str
) -> None:
    run = make_run(tmp_path)
    train_data, validation_data = loaders(run)
    with pytest.raises(ConfigError) as raised:
        fit(run, TinyRegression(0.1), train_data, validation_data, **{name: 2})
    assert f"Trainer({name}=...)" in str(raised.value)
    assert OWNED_TRAINER_ARGUMENTS[name] in str(raised.value)


def test_a_due_validation_lightning_cannot_run_fails_in_one_line(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    train_data, _ = loaders(run)
    with pytest.raises(detflow.TrialError, match="a validation was due at batch 10"):
        fit(run, TinyRegression(0.1), train_data, None, **QUIET)
