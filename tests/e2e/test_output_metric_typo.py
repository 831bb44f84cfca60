"""A ``searcher.metric`` the trial does not report is caught at the first validation, in one
line listing what it does report: a run stops there (exit status 2), a sweep starts nothing
more and ends with that line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, read_metrics, run_cli

LINE = (
    "Error: searcher.metric = 'validation_acc' is not valid: expected one of the metrics "
    "the trial reports: validation_loss"
)


def test_a_metric_typo_stops_a_grid_of_50_epochs_in_its_first_validation_epoch(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "s"
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            "searcher.name=grid",
            "hyperparameters.lr=choice(0.02,0.05)",
            "searcher.max_length=50 epochs",
            "searcher.metric=validation_acc",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == LINE
    records = read_metrics(sweep_dir / "0")
    assert [(r["kind"], r["batches"]) for r in records] == [("train", 32), ("validation", 32)]
    assert not (sweep_dir / "1").exists()  # the second trial was never launched
    with open(sweep_dir / "results.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["status"] == "FAILED" and "validation_loss" in row["error"]
    result = json.loads((sweep_dir / "0" / "result.json").read_text())
    assert result["status"] == "refused"
    assert result["refused"]["key"] == "searcher.metric"


@pytest.mark.parametrize("script", [["train.py"], ["-m", "trials.quadratic_loop"]])
def test_a_metric_typo_ends_a_run_with_one_line_and_status_2(
    tmp_path: Path, script: list[str]
) -> None:
    command = [str(REPO / script[0]), *script[1:]] if script[0].endswith(".py") else script
    done = subprocess.run(
        [
            sys.executable,
            *command,
            "+experiment=quadratic",
            "searcher.max_length=50 epochs",
            "searcher.metric=validation_acc",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [LINE]
    assert "Traceback" not in done.stdout
    validated = [line for line in done.stdout.splitlines() if "] - validated" in line]
    assert len(validated) == 1 and " at epoch 1, batch 32/32; validation_loss=" in validated[0]
    assert "epoch 2" not in done.stdout
