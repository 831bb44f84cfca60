"""Jobs a real Slurm can never start fail at once with Slurm's reason, not waited on (#17)."""

from __future__ import annotations

import csv
import subprocess
import time
from datetime import datetime
from pathlib import Path

from pytest import mark

from tests.slurm_support import _slurm_must_run_in_ci, needs_slurm
from tests.support import run_cli

pytestmark = [needs_slurm, mark.usefixtures(_slurm_must_run_in_ci.__name__)]
_ = _slurm_must_run_in_ci

SLURM = ["hydra/launcher=detflow_slurm", "hydra.launcher.time=10", "hydra.launcher.gpus_per_node=0"]


def _nodes(partition: str) -> int:
    """How many nodes the partition has now (the cluster may grow while the suite runs)."""
    for _ in range(30):  # slurmctld may be restarting for a moment
        done = subprocess.run(
            ["sinfo", "-h", "-p", partition, "-o", "%D"], capture_output=True, text=True
        )
        if done.returncode == 0 and done.stdout.strip():
            return sum(int(n) for n in done.stdout.split())
        time.sleep(1)
    raise AssertionError(f"sinfo does not answer: {done.stderr}")


def _failed_trial(tmp_path: Path, *args: str) -> tuple[dict[str, str], str]:
    sweep_dir = tmp_path / "s"
    done = run_cli(
        ["-m", "+experiment=quadratic", f"hydra.sweep.dir={sweep_dir}", *SLURM, *args],
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    with open(sweep_dir / "results.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["status"] == "FAILED"
    return row, done.stdout


def _logged_at(out: str, text: str) -> datetime:
    """When the driver logged the first line holding ``text`` (its ``[%Y-%m-%d %H:%M:%S,ms]``)."""
    line = next(line for line in out.splitlines() if text in line)
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")


def test_a_job_asking_for_more_nodes_than_exist_fails_within_30_s_with_slurms_reason(
    tmp_path: Path,
) -> None:
    nodes = _nodes("debug") + 1
    row, out = _failed_trial(
        tmp_path,
        "hydra.launcher.partition=debug",
        f"hydra.launcher.nodes={nodes}",
        f"resources.slots_per_trial={nodes}",  # one slot per node: detflow takes it
        f"hyperparameters.global_batch_size={8 * nodes}",
    )
    waited = _logged_at(out, "trial 0 failed") - _logged_at(out, "trial 0: Slurm job")
    assert waited.total_seconds() < 30, out  # from its submission (the sweep's start-up aside)
    assert f"PartitionNodeLimit (nodes={nodes}; partition debug has {nodes - 1})" in row["error"]
    assert "restart" not in row["error"]  # no restart: it never could start


def test_a_partition_sbatch_refuses_fails_the_trial_at_submission(tmp_path: Path) -> None:
    row, _ = _failed_trial(tmp_path, "hydra.launcher.partition=no_such_partition")
    assert row["error"].startswith(
        "Slurm refused the job at submission: Batch job submission failed: "
        "Invalid partition name specified (asked: "
    ), row["error"]
    assert "partition=no_such_partition" in row["error"]
