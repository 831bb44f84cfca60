"""The example CLI end to end: ``python train.py +experiment=...`` as a user runs it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import read_metrics

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_digits_mlp_trains_five_epochs_and_learns(cli: Cli, tmp_path: Path) -> None:
    done = cli("+experiment=digits_mlp")
    assert done.returncode == 0, done.stderr
    records = read_metrics(tmp_path / "run")
    final = records[-1]
    assert final["kind"] == "validation"
    assert (final["batches"], final["epochs"]) == (225, 5)  # 1438 records / 32 = 45 batches
    assert final["metrics"]["validation_accuracy"] > 0.9
    assert sum(r["kind"] == "validation" for r in records) == 5


@pytest.mark.parametrize(
    ("overrides", "batches", "line"),
    [
        (
            ["searcher.max_length=600 records"],
            19,
            "searcher.max_length 600 records -> 19 batches (608 records) at global_batch_size 32",
        ),
        (["searcher.max_length=7 steps", "optimizations.aggregation_frequency=3"], 21, None),
        (
            ["searcher.max_length={batches: 10}", "optimizations.aggregation_frequency=4"],
            12,
            "searcher.max_length 10 batches -> 12 batches (384 records) at global_batch_size 32,"
            " aggregation_frequency 4",
        ),
    ],
)
def test_lengths_on_the_command_line_train_exactly(
    cli: Cli, tmp_path: Path, overrides: list[str], batches: int, line: str | None
) -> None:
    done = cli("+experiment=digits_mlp", *overrides)
    assert done.returncode == 0, done.stderr
    final = read_metrics(tmp_path / "run")[-1]
    assert final["batches"] == batches
    if line is not None:
        assert line in done.stdout


def test_nan_loss_fails_the_run_in_one_line(cli: Cli, tmp_path: Path) -> None:
    done = cli("+experiment=quadratic", "+hyperparameters.fail_at_batch=3")
    assert done.returncode == 1
    assert "trial failed: loss is nan at batch 3" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_hparams_json_records_value_and_source(cli: Cli, tmp_path: Path) -> None:
    done = cli(
        "+experiment=digits_mlp",
        "searcher.max_length=2 batches",
        "hyperparameters.global_batch_size=64",
        "+hyperparameters.momentum=0.5",
    )
    assert done.returncode == 0, done.stderr
    hparams = json.loads((tmp_path / "run" / "hparams.json").read_text())
    assert hparams["hyperparameters.global_batch_size"] == {"value": 64, "source": "override"}
    assert hparams["hyperparameters.base_batch_size"] == {"value": 32, "source": "config"}
    assert hparams["hyperparameters.lr"] == {
        "value": 0.2,
        "source": "config",
        "expression": "${df.scale:0.1,linear}",
    }
    assert hparams["hyperparameters.momentum"] == {"value": 0.5, "source": "override"}
    assert (
        "hyperparameters.momentum: code gave 0.9, override gave 0.5; using override's 0.5"
        in done.stdout
    )
