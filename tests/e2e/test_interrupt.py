"""Ctrl-C: SIGINT to the whole process group, as a terminal sends it.

The first Ctrl-C of a sweep asks the running trials to checkpoint at their next step and end
(the local launcher sends them ``SIGUSR2``; they ignore ``SIGINT`` itself), the sweep saves
its state and exits with status 130 and one line saying how to resume; the rerun redoes no
batch trained before the signal. A second Ctrl-C stops at once: the trials are killed, the
state on disk is the last one saved, and it resumes. A single run checkpoints at its next step
and says ``resume=true``. No traceback, no process left behind.

All on the dependency-free quadratic trial, slowed down by ``seconds_per_batch``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from detflow._harness.checkpoint import CheckpointStore
from detflow._search.driver import SweepDriver, SweepInterrupted, TrialOutcome
from detflow._search.searchers import Job, make_searcher
from detflow._search.space import Choice
from tests.slurm_support import needs_slurm
from tests.support import REPO, read_metrics, run_cli

FORBIDDEN = ("Traceback", "KeyboardInterrupt", "Error executing job")
#: A grid of three points, two at a time: the third has not started when Ctrl-C comes.
POINTS = ("0.01", "0.02", "0.03")
TRIAL = [
    "+experiment=quadratic",
    "searcher.max_length=64 batches",
    "scheduling_unit=4",
    "min_checkpoint_period=16 batches",
    "min_validation_period=16 batches",
]
GRID = ["searcher.name=grid", f"hyperparameters.lr=choice({','.join(POINTS)})"]


# -- helpers ------------------------------------------------------------------------------------
def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen[str]:
    """``python train.py ARGS`` as a terminal's foreground job: its own process group."""
    with open(log, "w") as handle:
        return subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args],
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            env={
                **{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
            },
            start_new_session=True,
        )


def _wait_for(what: Callable[[], bool], timeout: float, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert process.poll() is None, f"exited {process.returncode} before the signal"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _trained(run_dir: Path) -> int:
    """The batches of the last training report in ``metrics.jsonl`` (0 without one)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    batches = 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if record.get("kind") == "train":
            batches = int(record["batches"])
    return batches


def _left_in_group(pgid: int) -> list[str]:
    """Processes of the process group ``pgid`` still there (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid:
            found.append(f"{entry.name} {fields[0]} {cmdline}")
    return found


def _assert_nothing_left(pgid: int) -> None:
    deadline = time.monotonic() + 2
    while _left_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _left_in_group(pgid) == []


def _after(log: Path, offset: int) -> list[str]:
    return log.read_text()[offset:].splitlines()


def _without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("time", "window")} for r in records]


def _validations(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in _without_times(read_metrics(run_dir)) if r["kind"] == "validation"]


def _assert_counted_once(run_dir: Path, target: int) -> None:
    """Every training report's window starts where the one before it ended, and together
    they cover the target exactly: no batch trained twice, none skipped."""
    at = 0
    for record in read_metrics(run_dir):
        if record["kind"] == "train":
            assert record["batches"] == at + record["window"]["batches"], (at, record)
            at = record["batches"]
    assert at == target


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "results.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted sweep every interrupted-and-resumed one must equal."""
    tmp = tmp_path_factory.mktemp("reference")
    done = run_cli(
        [
            "-m",
            *TRIAL,
            *GRID,
            f"hydra.sweep.dir={tmp / 'sweep'}",
            "searcher.max_concurrent_trials=2",
        ],
        cwd=tmp,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "sweep"


# -- the sweep: the first Ctrl-C ----------------------------------------------------------------
@pytest.mark.parametrize("start_method", ["fork_server", "spawn"])
def test_ctrl_c_of_a_sweep_checkpoints_the_trials_and_the_rerun_redoes_no_batch(
    tmp_path: Path, reference: Path, start_method: str
) -> None:
    sweep_dir = tmp_path / "sweep"
    command = [
        "-m",
        *TRIAL,
        *GRID,
        f"hydra.sweep.dir={sweep_dir}",
        "searcher.max_concurrent_trials=2",
        f"hydra.launcher.start_method={start_method}",
    ]
    log = tmp_path / "driver.log"
    driver = _start([*command, "+hyperparameters.seconds_per_batch=0.02"], tmp_path, log)
    try:
        # Both running trials past their first checkpoint (16): a rerun from it would redo
        # batches; a Ctrl-C checkpoint leaves none to redo.
        _wait_for(lambda: min(_trained(sweep_dir / t) for t in "01") >= 20, 60, driver)
        offset = log.stat().st_size
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=60) == 130, log.read_text()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    _assert_nothing_left(driver.pid)
    lines = _after(log, offset)
    output = log.read_text()
    assert len(lines) <= 3, lines
    assert not any(marker in output for marker in FORBIDDEN), output
    (last,) = [line for line in lines if line.startswith("interrupted:")]
    assert "2 trials checkpointed and stopped" in last, last
    assert f"run the same command with hydra.sweep.dir={sweep_dir} (state saved" in last, last

    # Each running trial stopped on request with a checkpoint of all it had trained.
    stopped: dict[str, tuple[int, str]] = {}
    for trial in "01":
        run_dir = sweep_dir / trial
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "stopped"
        loaded = CheckpointStore(run_dir / "checkpoints").load()
        assert loaded is not None and loaded.meta["batches"] == result["batches"]
        assert _trained(run_dir) == result["batches"] < 64
        stopped[trial] = (result["batches"], (run_dir / "metrics.jsonl").read_text())
    assert not (sweep_dir / "2").exists()  # the third had not started: in flight, not lost
    state = json.loads((sweep_dir / "searcher.json").read_text())
    assert sorted(state["searcher"]["in_flight"]) == [0, 1]

    rerun = run_cli(
        [*command, "+hyperparameters.seconds_per_batch=0.02"], cwd=tmp_path, timeout=120
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert [r["status"] for r in _rows(sweep_dir)] == ["COMPLETED"] * len(POINTS)
    for trial, (batches, metrics) in stopped.items():
        run_dir = sweep_dir / trial
        train_log = (run_dir / "train.log").read_text()
        resumed = re.findall(r"resumed from \S+/(\d+): (\d+) batches", train_log)
        assert resumed == [(f"{batches:010d}", str(batches))], train_log
        # Nothing reported before the signal was dropped to be trained again ...
        assert (run_dir / "metrics.jsonl").read_text().startswith(metrics)
        _assert_counted_once(run_dir, 64)  # ... and every batch was trained once
    for trial in map(str, range(len(POINTS))):
        assert _validations(sweep_dir / trial) == _validations(reference / trial), trial
        got = json.loads((sweep_dir / trial / "result.json").read_text())
        want = json.loads((reference / trial / "result.json").read_text())
        assert (got["batches"], got["metric"]) == (want["batches"], want["metric"])


# -- the sweep: a second Ctrl-C -----------------------------------------------------------------
def test_a_second_ctrl_c_stops_at_once_and_the_state_resumes(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    command = [
        "-m",
        "+experiment=quadratic",
        "searcher.name=grid",
        "hyperparameters.lr=choice(0.01,0.02)",
        f"hydra.sweep.dir={sweep_dir}",
        "searcher.max_concurrent_trials=2",
        "searcher.max_length=6 batches",
        "scheduling_unit=1",
        "min_checkpoint_period=2 batches",
    ]
    log = tmp_path / "driver.log"
    # A batch takes 4 s: the first Ctrl-C's stop would wait for the batch to end.
    driver = _start([*command, "+hyperparameters.seconds_per_batch=4"], tmp_path, log)
    try:
        _wait_for(lambda: "starting trial 1" in log.read_text(), 60, driver)
        time.sleep(1.0)  # both trials in their first batch
        offset = log.stat().st_size
        os.killpg(driver.pid, signal.SIGINT)
        _wait_for(lambda: "stopping:" in log.read_text()[offset:], 10, driver)
        signalled = time.monotonic()
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=30) == 130, log.read_text()
        took = time.monotonic() - signalled
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert took < 2.0, took  # not the rest of a 4 s batch
    _assert_nothing_left(driver.pid)
    lines = _after(log, offset)
    output = log.read_text()
    assert len(lines) <= 3, lines
    assert not any(marker in output for marker in FORBIDDEN), output
    (last,) = [line for line in lines if line.startswith("interrupted:")]
    assert "stopped at once" in last, last
    assert f"run the same command with hydra.sweep.dir={sweep_dir}" in last, last

    # The state on disk is whole (no temporary file) and resumes: both trials in flight.
    assert [p.name for p in sweep_dir.rglob("*") if ".tmp" in p.name] == []
    state = json.loads((sweep_dir / "searcher.json").read_text())
    assert sorted(state["searcher"]["in_flight"]) == [0, 1]
    rerun = run_cli([*command, "+hyperparameters.seconds_per_batch=0.01"], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert [r["status"] for r in _rows(sweep_dir)] == ["COMPLETED", "COMPLETED"]
    for trial in "01":
        assert json.loads((sweep_dir / trial / "result.json").read_text())["batches"] == 6


# -- a single run -------------------------------------------------------------------------------
def test_ctrl_c_of_a_single_run_checkpoints_and_says_resume_true(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [*TRIAL, "hyperparameters.lr=0.02", f"hydra.run.dir={run_dir}"]
    reference = run_cli(
        [*TRIAL, "hyperparameters.lr=0.02", f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path
    )
    assert reference.returncode == 0, reference.stdout + reference.stderr
    log = tmp_path / "run.log"
    process = _start([*command, "+hyperparameters.seconds_per_batch=0.02"], tmp_path, log)
    try:
        _wait_for(lambda: _trained(run_dir) >= 20, 60, process)
        offset = log.stat().st_size
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 130, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    _assert_nothing_left(process.pid)
    output = log.read_text()
    assert not any(marker in output for marker in FORBIDDEN), output
    lines = _after(log, offset)
    assert lines[-1].startswith("interrupted: checkpoint saved"), lines
    assert f"hydra.run.dir={run_dir} resume=true" in lines[-1], lines
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "stopped" and result["batches"] == _trained(run_dir) < 64
    metrics = (run_dir / "metrics.jsonl").read_text()

    resumed = run_cli([*command, "resume=true"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    checkpoint = run_dir / "checkpoints" / f"{result['batches']:010d}"
    assert f"resumed from {checkpoint}: {result['batches']} batches" in resumed.stdout
    assert (run_dir / "metrics.jsonl").read_text().startswith(metrics)
    _assert_counted_once(run_dir, 64)
    assert _validations(run_dir) == _validations(tmp_path / "ref")


# -- Slurm: the jobs go on ------------------------------------------------------------------------
SLURM = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
]


@needs_slurm
def test_ctrl_c_of_a_slurm_sweep_leaves_its_jobs_running_and_says_so(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    command = [
        "-m",
        *TRIAL,
        "searcher.max_length=32 batches",
        f"hydra.sweep.dir={sweep_dir}",
        *SLURM,
        "+hyperparameters.seconds_per_batch=0.05",
    ]
    log = tmp_path / "driver.log"
    driver = _start(command, tmp_path, log)
    try:
        _wait_for(lambda: _trained(sweep_dir / "0") >= 4, 120, driver)
        job = re.findall(r"trial 0: Slurm job (\S+),", log.read_text())[0]
        offset = log.stat().st_size
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=30) == 130, log.read_text()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    lines = _after(log, offset)
    assert len(lines) <= 3, lines
    assert "Traceback" not in log.read_text()
    (last,) = [line for line in lines if line.startswith("interrupted:")]
    assert f"Slurm jobs {job} keep running (scancel {job} to stop them)" in last, last
    assert f"run the same command with hydra.sweep.dir={sweep_dir} to resume" in last, last
    assert _trained(sweep_dir / "0") < 32  # the driver did not wait for the job
    # The job goes on and completes; the rerun records it from its result, runs nothing.
    deadline = time.monotonic() + 120
    while not (sweep_dir / "0" / "result.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    while json.loads((sweep_dir / "0" / "result.json").read_text())["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    rerun = run_cli(command, cwd=tmp_path, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Slurm job" not in rerun.stdout  # nothing submitted again
    assert [r["status"] for r in _rows(sweep_dir)] == ["COMPLETED"]


# -- the driver alone, through a fake launcher ----------------------------------------------------
class StoppingLauncher:
    """Trials that train until asked to stop; then each writes a ``stopped`` result.json."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = sweep_dir
        self.running: list[int] = []
        self.started: list[int] = []
        self.driver: SweepDriver | None = None
        self.stop_after_waits = 1
        self.waits = 0

    def start(self, trial_id: int, overrides: list[str]) -> None:
        self.running.append(trial_id)
        self.started.append(trial_id)

    def wait(self) -> list[TrialOutcome]:
        self.waits += 1
        if self.waits == self.stop_after_waits:  # Ctrl-C now: the running trials stop
            assert self.driver is not None
            self.driver.request_stop()
        ended = [TrialOutcome(t) for t in self.running]
        for trial_id in self.running:
            status = "stopped" if self.waits >= self.stop_after_waits else "completed"
            batches = 7 if status == "stopped" else 10
            _write_result(self.sweep_dir / str(trial_id), status, batches)
        self.running = []
        return ended


def _write_result(trial_dir: Path, status: str, batches: int) -> None:
    trial_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "status": status,
        "records": batches * 8,
        "batches": batches,
        "steps": batches,
        "epochs": 0,
        "target_batches": 10,
        "batches_per_epoch": 10,
        "global_batch_size": 8,
        "aggregation_frequency": 1,
        "length": str(Fraction(batches, 10)),
        "unit": "epochs",
        "metric": 0.5,
        "best_metric": 0.5,
        "validation": {"validation_loss": 0.5},
    }
    (trial_dir / "result.json").write_text(json.dumps(payload))


def _driver(sweep_dir: Path, launcher: Any) -> SweepDriver:
    searcher = make_searcher(
        "grid",
        space={"hyperparameters.lr": Choice((0.1, 0.2, 0.3))},
        max_length=1,
        max_trials=1,
        seed=0,
        metric="validation_loss",
        smaller_is_better=True,
    )

    def overrides_for(job: Job) -> list[str]:
        return [f"hydra.sweep.subdir={job.trial_id}"]

    return SweepDriver(searcher, launcher, sweep_dir, overrides_for, 2, "epochs")


def test_a_stop_request_relaunches_nothing_and_leaves_the_stopped_trials_in_flight(
    tmp_path: Path,
) -> None:
    launcher = StoppingLauncher(tmp_path)
    driver = _driver(tmp_path, launcher)
    launcher.driver = driver
    with pytest.raises(SweepInterrupted) as info:
        driver.run()
    assert (info.value.stopped, info.value.left) == ([0, 1], [])
    assert launcher.started == [0, 1]  # no relaunch of the stopped ones, no third trial
    state = json.loads((tmp_path / "searcher.json").read_text())["searcher"]
    assert sorted(state["in_flight"]) == [0, 1]

    again = StoppingLauncher(tmp_path)
    again.stop_after_waits = 10**6
    resumed = _driver(tmp_path, again)
    again.driver = resumed
    summary = resumed.run()
    assert again.started[:2] == [0, 1]  # resumed first, then the third
    assert sorted(again.started) == [0, 1, 2]
    assert [t.status.value for t in summary.trials] == ["COMPLETED"] * 3
