"""``hydra.sweeper.detach=true`` on the real Slurm: the driver is a Slurm job of its own; the
command returns at once; ``detflow status`` / ``detflow cancel`` follow and stop it; a
requeued driver resumes the sweep and runs every trial once."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest import mark

from detflow._core.detached import DRIVER_LOG, DriverRecord
from detflow._results.cli import main as detflow_main
from tests.slurm_support import _slurm_must_run_in_ci, accounted_runs, needs_slurm
from tests.support import run_cli

pytestmark = [needs_slurm, mark.usefixtures(_slurm_must_run_in_ci.__name__)]
_ = _slurm_must_run_in_ci

FOUR_TRIALS = [
    "-m",
    "+experiment=quadratic",
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
    "searcher.name=grid",
    "hyperparameters.lr=choice(0.01,0.02,0.03,0.04)",
    "searcher.max_concurrent_trials=2",
    "++hyperparameters.seconds_per_batch=0.05",  # 6 s a trial: trials in flight at a requeue
    "hydra.sweeper.detach=true",
    "hydra.sweeper.driver.time=15",
]


def _status(sweep: Path) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert detflow_main(["status", str(sweep), "--json"]) == 0
    status: dict[str, Any] = json.loads(out.getvalue())
    return status


def _rows(sweep: Path) -> list[dict[str, str]]:
    try:
        with open(sweep / "results.csv") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []


def _completed(sweep: Path) -> int:
    return sum(row["status"] == "COMPLETED" for row in _rows(sweep))


def _queued(job_id: str) -> bool:
    done = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    )
    return bool(done.stdout.strip())


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.5)


def _detach(tmp_path: Path, sweep: Path, *extra: str) -> tuple[DriverRecord, float]:
    started = time.monotonic()
    done = run_cli([*FOUR_TRIALS, f"hydra.sweep.dir={sweep}", *extra], cwd=tmp_path, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    record = DriverRecord.read(sweep)
    assert record is not None
    assert f"driven by Slurm job {record.job_id} (detflow-sweep-train)" in done.stdout
    assert f"detflow status {sweep}" in done.stdout
    return record, took


def _trial_jobs_per_trial(sweep: Path) -> dict[int, int]:
    text = (sweep / DRIVER_LOG).read_text()
    counts: dict[int, int] = {}
    for trial in re.findall(r"trial (\d+): Slurm job \S+,", text):
        counts[int(trial)] = counts.get(int(trial), 0) + 1
    return counts


def test_a_requeued_detached_driver_finishes_every_trial_once(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    record, took = _detach(tmp_path, sweep)
    print(f"detached submission returned after {took:.1f} s")
    # It returned while the sweep runs: the driver job is queued or running, trials are not done.
    assert _queued(record.job_id)
    assert _completed(sweep) < 4
    squeue = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True)
    assert f"{record.job_id} detflow-sweep-train" in squeue.stdout

    # detflow status while it runs: the driver's state, the trials, the running trial jobs
    _wait(lambda: _status(sweep)["jobs"] != [], 120, "a trial job to be queued")
    status = _status(sweep)
    assert status["driver"]["job_id"] == record.job_id
    assert status["driver"]["state"] == "RUNNING"
    assert status["driver"]["job_name"] == "detflow-sweep-train"
    assert sum(len(ids) for ids in status["trials"].values()) >= 1

    # Requeue the driver mid-sweep: one trial done, others still to go
    _wait(lambda: _completed(sweep) >= 1, 180, "a first completed trial")
    assert _completed(sweep) < 4
    subprocess.run(["scontrol", "requeue", record.job_id], check=True)
    _wait(lambda: not _queued(record.job_id), 240, "the requeued driver to finish")
    log = (sweep / DRIVER_LOG).read_text()
    assert "start 1," in log, log  # the requeued driver ran again ...
    assert [row["status"] for row in _rows(sweep)] == ["COMPLETED"] * 4, log
    assert _trial_jobs_per_trial(sweep) == {0: 1, 1: 1, 2: 1, 3: 1}, log  # ... each trial once
    for trial in range(4):
        assert "resumed from" not in (sweep / str(trial) / "train.log").read_text()
    state = accounted_runs(record.job_id, "State")
    assert state[-1:] == ["COMPLETED"], state


def test_detflow_cancel_stops_the_driver_and_the_same_command_resumes(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    one_long = ["hyperparameters.lr=choice(0.01)", "++hyperparameters.seconds_per_batch=0.2"]
    record, _ = _detach(tmp_path, sweep, *one_long)
    _wait(lambda: any(j["state"] == "RUNNING" for j in _status(sweep)["jobs"]), 120, "a trial")
    train_log = sweep / "0" / "train.log"
    _wait(lambda: train_log.exists() and "trained:" in train_log.read_text(), 120, "training")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert detflow_main(["cancel", str(sweep)]) == 0
    text = out.getvalue()
    assert f"driver job {record.job_id} stopped" in text, text
    assert "to resume: cd " in text
    assert not _queued(record.job_id)
    status = _status(sweep)
    assert status["jobs"] == [] and status["driver"]["state"] != "RUNNING", status
    assert _completed(sweep) == 0
    assert (sweep / "searcher.json").exists()  # the state is kept

    # The same command resumes the sweep in a new driver job, to the end
    again, _ = _detach(tmp_path, sweep, *one_long)
    assert again.job_id != record.job_id
    _wait(lambda: not _queued(again.job_id), 240, "the resumed driver to finish")
    assert [row["status"] for row in _rows(sweep)] == ["COMPLETED"], (
        sweep / DRIVER_LOG
    ).read_text()
    assert (sweep / "0" / "train.log").read_text().count("resumed from") == 1  # its checkpoint
