"""``resources.slots_per_trial=2``: one process per slot, torch.distributed (gloo) — locally
and on the real Slurm; the same results as one slot, exact resume after pre-emption.

Tolerance: a 2-slot run sees the same records in every global batch as a 1-slot run (one
seeded permutation dealt to the slots) and averages the same gradients, so the two differ
only by the order of floating-point sums in the all-reduce: we allow 1e-4 relative on the
final validation loss (measured: 5e-7) and require the same accuracy to 3 decimals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.slurm_support import _slurm_must_run_in_ci, needs_slurm
from tests.support import read_metrics, run_cli, start_driver

_ = _slurm_must_run_in_ci
DIGITS = ["+experiment=digits_mlp", "searcher.max_length=2 epochs", "seed=5"]
SLURM = ["hydra/launcher=detflow_slurm", "hydra.launcher.partition=debug", "hydra.launcher.time=10"]


def _final(run_dir: Path) -> dict:
    return read_metrics(run_dir)[-1]


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("one")
    done = run_cli([*DIGITS, f"hydra.run.dir={tmp / 'run'}"], cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "run"


def _assert_matches_one_slot(two: Path, one: Path) -> None:
    a, b = _final(two), _final(one)
    assert (a["kind"], a["batches"], a["records"], a["epochs"]) == (
        b["kind"],
        b["batches"],
        b["records"],
        b["epochs"],
    )
    loss_a, loss_b = a["metrics"]["validation_loss"], b["metrics"]["validation_loss"]
    assert abs(loss_a - loss_b) <= 1e-4 * abs(loss_b)
    assert round(a["metrics"]["validation_accuracy"], 3) == round(
        b["metrics"]["validation_accuracy"], 3
    )
    assert a["window"]["records"] == b["window"]["records"] == 359  # every record, once
    assert len(read_metrics(two)) == len(read_metrics(one))  # one writer: no duplicate lines
    assert len(list(two.parent.rglob("metrics.jsonl"))) == 1


def test_two_local_slots_match_one_slot(tmp_path: Path, one_slot: Path) -> None:
    done = run_cli(
        [
            "-m",
            *DIGITS,
            "hydra/launcher=detflow_local",
            "resources.slots_per_trial=2",
            f"hydra.sweep.dir={tmp_path / 's'}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_matches_one_slot(tmp_path / "s" / "0", one_slot)
    assert (tmp_path / "s" / "0" / "output.rank1.log").exists()


@needs_slurm
def test_two_slurm_slots_match_one_slot(tmp_path: Path, one_slot: Path) -> None:
    done = run_cli(
        ["-m", *DIGITS, *SLURM, "resources.slots_per_trial=2", f"hydra.sweep.dir={tmp_path / 's'}"],
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_matches_one_slot(tmp_path / "s" / "0", one_slot)


def test_a_trial_without_a_process_group_refuses_two_slots(tmp_path: Path) -> None:
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            "resources.slots_per_trial=2",
            f"hydra.sweep.dir={tmp_path / 's'}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "resources.slots_per_trial = 2 is not valid" in done.stdout


SLOW = [
    *DIGITS,
    "resources.slots_per_trial=2",
    "+hyperparameters.seconds_per_batch=0.05",
    "scheduling_unit=5",
    "min_checkpoint_period=1 epochs",
]


def _trained(trial_dir: Path) -> int:
    try:
        return max((r["batches"] for r in read_metrics(trial_dir)), default=0)
    except (OSError, ValueError):
        return 0


def _validations(trial_dir: Path) -> list[tuple[int, dict]]:
    return [
        (r["batches"], r["metrics"]) for r in read_metrics(trial_dir) if r["kind"] == "validation"
    ]


@pytest.fixture(scope="module")
def two_slots_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("two")
    done = run_cli(
        [
            "-m",
            *DIGITS,
            "hydra/launcher=detflow_local",
            "resources.slots_per_trial=2",
            f"hydra.sweep.dir={tmp / 's'}",
        ],
        cwd=tmp,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "s" / "0"


def _driver(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    log = tmp_path / "driver.log"
    driver = start_driver(["-m", *args, f"hydra.sweep.dir={tmp_path / 's'}"], cwd=tmp_path, log=log)
    return driver, log


def _trial_processes(tmp_path: Path) -> list[str]:
    """The pids of the trial's slots: the fork server's children (or spawned workers)."""

    def pgrep(*args: str) -> list[str]:
        done = subprocess.run(["pgrep", *args], capture_output=True, text=True, check=False)
        return done.stdout.split()

    servers = pgrep("-f", f"detflow._launch.forkserver {tmp_path}")
    children = [pid for server in servers for pid in pgrep("-P", server)]
    return children + pgrep("-f", f"detflow._launch.worker {tmp_path}")


def _wait_for(condition: object, deadline: float) -> None:
    while time.monotonic() < deadline and not condition():  # type: ignore[operator]
        time.sleep(0.05)
    assert condition(), "timed out"  # type: ignore[operator]


def test_a_preempted_two_slot_local_trial_resumes_exactly(
    tmp_path: Path, two_slots_uninterrupted: Path
) -> None:
    driver, log = _driver(tmp_path, *SLOW, "hydra/launcher=detflow_local")
    deadline = time.monotonic() + 240
    trial = tmp_path / "s" / "0"
    _wait_for(lambda: _trained(trial) >= 20, deadline)
    workers = _trial_processes(tmp_path)
    assert len(workers) == 2
    for pid in workers:
        os.kill(int(pid), signal.SIGUSR2)
    assert driver.wait(timeout=240) == 0, log.read_text()
    assert "was stopped before its target; relaunching it" in log.read_text()
    assert (trial / "train.log").read_text().count("resumed from") == 1
    assert _validations(trial) == _validations(two_slots_uninterrupted)


@needs_slurm
def test_a_preempted_two_slot_slurm_trial_resumes_exactly(
    tmp_path: Path, two_slots_uninterrupted: Path
) -> None:
    driver, log = _driver(tmp_path, *SLOW, *SLURM)
    deadline = time.monotonic() + 240
    trial = tmp_path / "s" / "0"

    def job_id() -> str | None:
        for line in log.read_text().splitlines():
            if "trial 0: Slurm job " in line:
                return line.split("trial 0: Slurm job ")[1].split(",")[0]
        return None

    _wait_for(lambda: job_id() is not None and _trained(trial) >= 20, deadline)
    subprocess.run(["scancel", "--signal=USR2", str(job_id())], check=True)
    assert driver.wait(timeout=240) == 0, log.read_text()
    assert (trial / "train.log").read_text().count("resumed from") == 1
    assert _validations(trial) == _validations(two_slots_uninterrupted)
    result = json.loads((trial / "result.json").read_text())
    assert result["status"] == "completed"
