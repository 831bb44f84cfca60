"""A node that fails mid-trial costs nothing: downed with ``scontrol update state=down``
while the trial trains, its job ends (or is requeued) by Slurm, the trial continues from its
last checkpoint on the other node (``max_restarts``; the failed node excluded), and its
metrics equal an uninterrupted run's."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from pytest import mark

from tests.slurm_support import _slurm_must_run_in_ci, accounted_runs, needs_slurm
from tests.support import read_metrics, run_cli, start_driver

pytestmark = [needs_slurm, mark.usefixtures(_slurm_must_run_in_ci.__name__)]
_ = _slurm_must_run_in_ci

SLOW = [
    "+experiment=digits_mlp",
    "searcher.max_length=2 epochs",
    "seed=5",
    "+hyperparameters.seconds_per_batch=0.1",
    "min_checkpoint_period=10 batches",
]
SLURM = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
    "max_restarts=1",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("straight")
    # without the sleep: it only slows each batch (the same batches, the same metrics)
    fast = [a for a in SLOW if "seconds_per_batch" not in a]
    done = run_cli(
        ["-m", *fast, "hydra/launcher=detflow_local", f"hydra.sweep.dir={tmp / 's'}"],
        cwd=tmp,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "s" / "0"


def _validations(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    return [
        (r["batches"], r["metrics"]) for r in read_metrics(run_dir) if r["kind"] == "validation"
    ]


def _jobs(log: Path) -> list[str]:
    return re.findall(r"trial 0: Slurm job (\d+),", log.read_text())


def _node_of(job: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True
    ).stdout.strip()


def _checkpointed(trial: Path) -> bool:
    return (trial / "checkpoints" / "latest.json").exists()


def test_a_node_downed_mid_trial_leaves_a_completed_trial_with_uninterrupted_metrics(
    tmp_path: Path, uninterrupted: Path
) -> None:
    log = tmp_path / "driver.log"
    driver = start_driver(
        ["-m", *SLOW, *SLURM, f"hydra.sweep.dir={tmp_path / 's'}"], cwd=tmp_path, log=log
    )
    trial = tmp_path / "s" / "0"
    node = ""
    try:
        deadline = time.monotonic() + 240
        while not (_jobs(log) and _checkpointed(trial)):  # past its first checkpoint
            assert driver.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        first = _jobs(log)[0]
        node = _node_of(first)
        assert node, f"job {first} is not running"
        subprocess.run(
            ["scontrol", "update", f"nodename={node}", "state=down", "reason=detflow-test"],
            check=True,
        )
        assert driver.wait(timeout=300) == 0, log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
        if node:
            # (the node stays down until resumed: ReturnToService=1)
            subprocess.run(
                ["scontrol", "update", f"nodename={node}", "state=resume"],
                check=False,
                capture_output=True,
            )
    text = log.read_text()
    assert (trial / "train.log").read_text().count("resumed from") == 1, text
    assert _validations(trial) == _validations(uninterrupted)
    result = (trial / "result.json").read_text()
    assert '"completed"' in result, result
    # the trial's last run was on another node than the one that failed; the result is
    # written before the job ends, and slurmdbd records the end a moment after slurmctld
    last = (accounted_runs(_jobs(log)[-1], "NodeList,State") or [""])[-1]
    assert last.endswith("|COMPLETED"), (last, text)
    assert last.split("|")[0] != node, (last, text)
