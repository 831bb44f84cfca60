"""The multi-node local Slurm (``scripts/local-slurm.sh``: each slurmd in its own network and
UTS namespace) and trials across nodes: ``resources.slots_per_trial=2`` with
``hydra.launcher.nodes=2`` is one process per node, torch.distributed (gloo) over the nodes'
addresses; the same metrics as one process; a pre-emption requeues the whole job, which
resumes exactly.

Tolerance as in ``tests/launch/test_multislot.py`` (#6): 1e-4 relative on the final
validation loss, the same accuracy to 3 decimals (only the order of the all-reduce's
floating-point sums differs from one process).
"""

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

DIGITS = [
    "+experiment=digits_mlp",
    "searcher.max_length=2 epochs",
    "seed=5",
    "+hyperparameters.seconds_per_batch=0.05",  # slow enough to be pre-empted mid-trial
    "min_checkpoint_period=1 epochs",
]
TWO_NODES = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "resources.slots_per_trial=2",
    "hydra.launcher.nodes=2",
]


def _nodes() -> dict[str, str]:
    """Node name -> NodeAddr, as slurmctld knows them."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "node"], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"NodeName=(\S+) .*?NodeAddr=(\S+)", out))


def test_sinfo_shows_two_nodes_each_with_its_own_address() -> None:
    nodes = _nodes()
    assert len(nodes) >= 2, nodes
    assert len(set(nodes.values())) == len(nodes), nodes  # one address per node
    listed = subprocess.run(
        ["sinfo", "-h", "-N", "-p", "debug", "-o", "%N"], capture_output=True, text=True
    ).stdout.split()
    assert set(nodes) <= set(listed), listed
    # each slurmd answers from its own namespace: a job step sees the node's own hostname
    names = subprocess.run(
        ["srun", "-N2", "-n2", "--ntasks-per-node=1", "-p", "debug", "hostname"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert len(set(names)) == 2 and set(names) <= set(nodes), names


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("one")
    # without the sleep: it only slows each batch (the same batches, the same metrics)
    fast = [a for a in DIGITS if "seconds_per_batch" not in a]
    done = run_cli([*fast, f"hydra.run.dir={tmp / 'run'}"], cwd=tmp, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "run"


def _trained(trial_dir: Path) -> int:
    try:
        return max((r["batches"] for r in read_metrics(trial_dir)), default=0)
    except (OSError, ValueError):
        return 0


def _job_id(log: Path) -> str | None:
    found = re.search(r"trial 0: Slurm job (\d+),", log.read_text())
    return found.group(1) if found else None


def test_a_two_slot_trial_over_two_nodes_matches_one_process_through_a_preemption(
    tmp_path: Path, one_process: Path
) -> None:
    log = tmp_path / "driver.log"
    driver = start_driver(
        ["-m", *DIGITS, *TWO_NODES, f"hydra.sweep.dir={tmp_path / 's'}"], cwd=tmp_path, log=log
    )
    trial = tmp_path / "s" / "0"
    deadline = time.monotonic() + 240
    while not (_job_id(log) and _trained(trial) >= 20):
        assert driver.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    job = str(_job_id(log))
    allocation = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%D %N"], capture_output=True, text=True
    ).stdout.split()
    assert allocation[:1] == ["2"], allocation  # the job holds both nodes
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # both tasks get it
    assert driver.wait(timeout=300) == 0, log.read_text()
    assert (trial / "train.log").read_text().count("resumed from") == 1

    # the whole job was requeued (one job, restarted once) and ran over two nodes
    deadline = time.monotonic() + 60  # the result is written before the job step ends
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, f"job {job} is still queued"
        time.sleep(0.5)
    accounted = accounted_runs(job, "State,NNodes,NodeList")
    assert any(line.startswith("REQUEUED|2|") for line in accounted), accounted
    assert accounted[-1].startswith("COMPLETED|2|"), accounted

    two, one = read_metrics(trial)[-1], read_metrics(one_process)[-1]
    assert (two["kind"], two["batches"], two["records"]) == (
        one["kind"],
        one["batches"],
        one["records"],
    )
    loss_two, loss_one = two["metrics"]["validation_loss"], one["metrics"]["validation_loss"]
    assert abs(loss_two - loss_one) <= 1e-4 * abs(loss_one)
    assert round(two["metrics"]["validation_accuracy"], 3) == round(
        one["metrics"]["validation_accuracy"], 3
    )
    # only rank 0 writes: one metrics file, each validation once, at the batches of one process
    assert len(list(trial.parent.rglob("metrics.jsonl"))) == 1
    assert _validation_batches(trial) == _validation_batches(one_process)


def _validation_batches(run_dir: Path) -> list[int]:
    return [r["batches"] for r in read_metrics(run_dir) if r["kind"] == "validation"]
