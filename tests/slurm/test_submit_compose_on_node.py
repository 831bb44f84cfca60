"""Compose on the node (#16): a Slurm job carries its overrides only, and composes its config
from the sweep's launch file where it runs; the trial's config is the one a compose gives."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from omegaconf import DictConfig
from pytest import mark

from tests.slurm_support import _slurm_must_run_in_ci, needs_slurm
from tests.support import run_cli

pytestmark = [needs_slurm, mark.usefixtures(_slurm_must_run_in_ci.__name__)]
_ = _slurm_must_run_in_ci

SLURM = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
]


def test_jobs_carry_their_overrides_and_compose_on_the_node(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    args = [
        "+experiment=quadratic",
        "searcher.name=grid",
        "searcher.max_length=2 batches",
        "hyperparameters.lr=choice(0.01,0.02)",
        "searcher.max_concurrent_trials=2",
    ]
    done = run_cli(["-m", *args, f"hydra.sweep.dir={sweep_dir}", *SLURM], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # Each job's pickle: the overrides, no config (the driver composed nothing).
    submitted = sorted((sweep_dir / ".detflow" / "slurm").glob("*/*_submitted.pkl"))
    assert len(submitted) == 2
    jobs = [pickle.loads(path.read_bytes()).function for path in submitted]
    assert [job.config for job in jobs] == [None, None]
    assert sorted(job.trial_id for job in jobs) == [0, 1]
    for job in jobs:
        assert f"hydra.sweep.subdir={job.trial_id}" in job.overrides
    # The master config went once into the launch file.
    shared = pickle.loads((sweep_dir / ".detflow" / "launch.pkl").read_bytes())
    assert isinstance(shared["master_config"], DictConfig)
    # What each node composed: the trial's own value, from the searcher, in its directory.
    for trial, lr in ((0, 0.01), (1, 0.02)):
        hparams = json.loads((sweep_dir / str(trial) / "hparams.json").read_text())
        assert hparams["hyperparameters.lr"] == {"value": lr, "source": "searcher"}, hparams
