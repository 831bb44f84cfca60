"""hydra-zen configs as experiments: ``make_config`` and ``builds`` register, run with
command-line overrides (provenance ``override`` in hparams.json), and sweep, as dataclass
experiments do (the Slurm launcher takes the same composed config)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

SCRIPT = """
import detflow
from detflow import ExperimentConfig, SearcherConfig
from hydra_zen import builds, make_config


class Model:
    def __init__(self, width: int = 4) -> None:
        self.width = width


detflow.register_experiment(
    "zen",
    make_config(
        hyperparameters=make_config(
            global_batch_size=2, lr=0.1, model=builds(Model, width=8)
        ),
        searcher=make_config(max_length="4 batches"),
        min_validation_period="2 batches",
        bases=(ExperimentConfig,),
    ),
)
detflow.register_experiment(
    "zen_builds",
    builds(
        ExperimentConfig,
        hyperparameters={"global_batch_size": 2, "lr": 0.1},
        searcher=SearcherConfig(max_length="4 batches"),
        populate_full_signature=True,
    ),
)


@detflow.main()
def main(cfg):
    run = detflow.init(cfg)
    w = 0.0
    for batch in run.batches([[1.0, 2.0], [3.0, 4.0]]):
        w += run.hparams["lr"] * (sum(batch) / 2 - w)
        run.report_training({"loss": (w - 2.5) ** 2})
        if run.should_validate:
            run.report_validation({"loss": (w - 2.5) ** 2})
        if run.should_checkpoint:
            run.checkpoint({"w": w})
    print("experiment", run.experiment.name, "model", run.hparams.get("model"))
    return run.finish().validation["validation_loss"]


if __name__ == "__main__":
    main()
"""


def zen_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "zen_train.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "launchers")])},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _hparams(run_dir: Path) -> dict[str, dict[str, object]]:
    values: dict[str, dict[str, object]] = json.loads((run_dir / "hparams.json").read_text())
    return values


@pytest.mark.parametrize("name", ["zen", "zen_builds"])
def test_a_hydra_zen_experiment_runs_with_an_override_whose_provenance_is_override(
    tmp_path: Path, name: str
) -> None:
    done = zen_script(tmp_path, f"+experiment={name}", "hyperparameters.lr=0.2", "hydra.run.dir=r")
    assert done.returncode == 0, done.stdout + done.stderr
    hparams = _hparams(tmp_path / "r")
    assert hparams["hyperparameters.lr"] == {"value": 0.2, "source": "override"}
    assert hparams["hyperparameters.global_batch_size"] == {"value": 2, "source": "config"}
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert (result["status"], result["batches"]) == ("completed", 4)
    assert f"experiment {name} " in done.stdout  # named as registered, like a dataclass


def test_builds_inside_hyperparameters_keeps_its_target_for_instantiate(tmp_path: Path) -> None:
    done = zen_script(
        tmp_path, "+experiment=zen", "hyperparameters.model.width=16", "hydra.run.dir=r"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'_target_': '__main__.Model'" in done.stdout and "'width': 16" in done.stdout
    assert _hparams(tmp_path / "r")["hyperparameters.model.width"]["source"] == "override"


def test_a_sweep_over_a_make_config_experiment(tmp_path: Path) -> None:
    done = zen_script(
        tmp_path,
        "-m",
        "+experiment=zen",
        "searcher.name=grid",
        "hyperparameters.lr=0.1,0.3",
        "hydra.sweep.dir=s",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with open(tmp_path / "s" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["hyperparameters.lr"] for row in rows) == ["0.1", "0.3"]
    assert {row["status"] for row in rows} == {"COMPLETED"}
    for row in rows:
        lr = _hparams(tmp_path / "s" / row["trial_id"])["hyperparameters.lr"]
        assert lr["source"] == "searcher"
