"""``searcher.name=pbt`` on the local Slurm: a child's job resumes from its copy of the
parent's checkpoint as a promoted trial's does."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pytest import mark

from tests.slurm_support import _slurm_must_run_in_ci, needs_slurm
from tests.support import read_metrics, run_cli

pytestmark = [needs_slurm, mark.usefixtures(_slurm_must_run_in_ci.__name__)]
_ = _slurm_must_run_in_ci

SLURM = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
]


def test_pbt_runs_on_slurm_and_a_child_continues_its_parents_training(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={sweep_dir}",
            *SLURM,
            "searcher.name=pbt",
            "searcher.population_size=2",
            "searcher.truncation_fraction=0.5",
            "searcher.perturb_every=1 epochs",
            "searcher.max_length=2 epochs",
            "searcher.max_concurrent_trials=2",
            "hyperparameters.lr=tag(log, interval(0.001, 0.3))",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with open(sweep_dir / "results.csv") as handle:
        table = {int(r["trial_id"]): r for r in csv.DictReader(handle)}
    assert sorted(table) == [0, 1, 2]  # two members, the worse replaced by a child
    parent = int(table[2]["parent"])
    assert table[parent]["status"] == "COMPLETED" and table[2]["status"] == "COMPLETED"
    assert {table[t]["status"] for t in (0, 1) if t != parent} == {"STOPPED_EARLY"}
    origin = json.loads((sweep_dir / "2" / "parent.json").read_text())
    assert origin == {"parent": parent, "batches": 32}

    def validated(trial: int) -> list[int]:
        records = read_metrics(sweep_dir / str(trial))
        return [m["batches"] for m in records if m["kind"] == "validation"]

    assert validated(2) == [64]  # from the parent's checkpoint at 32 on, not from scratch
    assert validated(parent) == [32, 64]
