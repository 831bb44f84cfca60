"""Fault injection on the dependency-free trial: a process killed inside a checkpoint write,
a disk that fills up mid-run, and Slurm pre-empting several trials of a sweep at once.

Each fault is made deterministic without test hooks in the product:

- a SIGKILL at a chosen step of a checkpoint write comes from ``tests/_inject/sitecustomize.py``
  (put first on ``PYTHONPATH``), which wraps ``os.fsync`` / ``os.replace`` for calls made from
  ``detflow/_checkpoint.py``;
- a full disk is a real one: a small tmpfs (root only) mounted on the run directory or on its
  ``checkpoints/``, with a filler file sized from an uninterrupted run's files so that the
  space runs out at a known write;
- pre-emption is the real Slurm's ``scancel --signal=USR2`` on several running jobs in one call.

The SIGKILL of the sweep driver itself is in ``tests/test_sweep_cli.py``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detflow._harness.checkpoint import CheckpointStore
from tests.slurm_support import AVAILABLE, IN_CI, needs_slurm
from tests.support import REPO, needs_root, read_metrics, run_cli, start_driver

INJECT = REPO / "tests" / "_inject"


def _without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as a rerun must reproduce them: all but the wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in ("time", "window")} for r in records]


def _result(run_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
    return result


def _trial_state(run_dir: Path) -> dict[str, Any]:
    """The trial's state in the latest checkpoint (the quadratic's weights, exactly)."""
    loaded = CheckpointStore(run_dir / "checkpoints").load()
    assert loaded is not None
    return loaded.trial_state


def _validations(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in _without_times(read_metrics(run_dir)) if r["kind"] == "validation"]


def _leftovers(run_dir: Path) -> list[str]:
    """Temporary files or directories a write left behind."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if ".tmp" in p.name)


def _assert_same_run(got: Path, want: Path) -> None:
    assert _without_times(read_metrics(got)) == _without_times(read_metrics(want))
    assert _result(got) == _result(want)
    assert _trial_state(got) == _trial_state(want)


# -- 1. SIGKILL inside a checkpoint write -----------------------------------------------------

KILL = [
    "+experiment=quadratic",
    "searcher.max_length=48 batches",
    "min_checkpoint_period=8 batches",
    "min_validation_period=8 batches",  # every checkpoint is a new best early on: best.json too
]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every killed-and-resumed run must equal."""
    tmp = tmp_path_factory.mktemp("straight")
    done = run_cli([*KILL, f"hydra.run.dir={tmp / 'run'}"], cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "run"


TMP = ".tmp-0000000016-PID"
GOOD = ("0000000008/state.json", "0000000008/trial.json", "best.json", "latest.json")
DONE = ("0000000016/state.json", "0000000016/trial.json")


@pytest.mark.parametrize(
    ("point", "left", "resumes_at"),
    [
        # checkpoint 16 half written: its temporary directory without state.json
        ("trial-state", (f"{TMP}/trial.json", *GOOD), 8),
        # complete, not yet renamed
        ("rename", (f"{TMP}/state.json", f"{TMP}/trial.json", *GOOD), 8),
        # renamed, latest.json still at 8
        ("after-rename", (*GOOD, *DONE), 8),
        # latest.json's new content written, not yet renamed over it
        ("latest", (".latest.json.tmp-PID", *GOOD, *DONE), 8),
        # latest.json at 16, best.json's new content not yet renamed over it
        ("best", (".best.json.tmp-PID", *GOOD, *DONE), 16),
    ],
)
def test_sigkill_inside_a_checkpoint_write_resumes_from_the_last_good_one(
    tmp_path: Path, straight: Path, point: str, left: tuple[str, ...], resumes_at: int
) -> None:
    run_dir = tmp_path / "run"
    killed = run_cli(
        [*KILL, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{INJECT}{os.pathsep}{REPO}", "DETFLOW_TEST_KILL": f"{point}:2"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    checkpoints = run_dir / "checkpoints"
    found = sorted(
        re.sub(r"-\d+(?=/|$)", "-PID", str(p.relative_to(checkpoints)))
        for p in checkpoints.rglob("*")
        if p.is_file()
    )
    assert found == sorted(left)  # killed where it was meant to be
    latest = json.loads((checkpoints / "latest.json").read_text())["name"]
    assert latest == f"{resumes_at:010d}"

    resumed = run_cli([*KILL, f"hydra.run.dir={run_dir}", "resume=true"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    resumed_from = re.findall(r"resumed from (\S+): (\d+) batches", resumed.stdout)
    assert resumed_from == [(str(checkpoints / latest), str(resumes_at))]
    _assert_same_run(run_dir, straight)
    assert _leftovers(run_dir) == []


# -- 2. A full disk -----------------------------------------------------------------------------


def _page(path: Path) -> int:
    return os.statvfs(path).f_bsize


def _pages(size: int, page: int) -> int:
    return -(-size // page)


def _fill(mount: Path, leave: int) -> Path:
    """A filler file that leaves exactly ``leave`` bytes (whole pages) free on ``mount``."""
    stat = os.statvfs(mount)
    filler = mount / "filler"
    filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - leave))
    stat = os.statvfs(mount)
    assert stat.f_bavail * stat.f_frsize == leave
    return filler


# ~130 reports of ~220 bytes, a checkpoint every 64 batches, one of 3 pages (~8 KiB of RNG
# state) plus the two pointers; no TensorBoard files and the log file elsewhere, see below.
DISK = [
    "+experiment=quadratic",
    "searcher.max_length=4 epochs",  # 128 batches
    "scheduling_unit=1",  # a metrics record every batch
    "min_checkpoint_period=64 batches",
]
NO_TB = {"DETFLOW_TENSORBOARD": "0"}


def _disk_args(run_dir: Path, *extra: str) -> list[str]:
    # Python's logging reports a failed write to the log file with a traceback of its own
    # (logging.raiseExceptions) and goes on: Hydra's file handler is kept off the small disk
    # so that what is checked is detflow's own writes.
    log = run_dir.parent / f"{run_dir.name}.log"
    return [*DISK, f"hydra.run.dir={run_dir}", f"hydra.job_logging.handlers.file.filename={log}"]


@pytest.fixture(scope="module")
def disk_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, on an ordinary disk; its file sizes size the fillers."""
    tmp = tmp_path_factory.mktemp("disk")
    run_dir = tmp / "ref"  # as long a name as the tests' "run": the same .hydra files
    done = run_cli(_disk_args(run_dir), cwd=tmp, env=NO_TB)
    assert done.returncode == 0, done.stdout + done.stderr
    return run_dir


def _assert_one_clear_line(done: subprocess.CompletedProcess[str], file: Path) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    lines = [line for line in output.splitlines() if "No space left on device" in line]
    assert len(lines) == 1, output
    assert f"trial failed: cannot write {file}: No space left on device" in lines[0], output
    assert "Traceback" not in output


def _assert_whole_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]  # every line parses


@needs_root
@pytest.mark.parametrize("full_at", [32, 96])  # before the first checkpoint (64), after it
def test_disk_full_while_writing_metrics(
    tmp_path: Path, tmpfs: Callable[[Path, int], Path], disk_reference: Path, full_at: int
) -> None:
    run_dir = tmpfs(tmp_path / "run", 256)
    tmpfs(run_dir / "checkpoints", 256)  # checkpoints elsewhere: the metrics fill this disk
    page = _page(run_dir)
    startup = sum(  # what is written before training: .hydra/*.yaml, hparams.json
        _pages(p.stat().st_size, page)
        for p in [*(disk_reference / ".hydra").iterdir(), disk_reference / "hparams.json"]
    )
    reference = (disk_reference / "metrics.jsonl").read_text().splitlines(keepends=True)
    room = sum(len(line) for line in reference if json.loads(line)["batches"] <= full_at)
    # Room for the reports up to about batch full_at, not for 32 more (~7 KiB): the disk
    # fills in a metrics append.
    filler = _fill(run_dir, (startup + _pages(room, page)) * page)

    failed = run_cli(_disk_args(run_dir), cwd=tmp_path, env=NO_TB)
    _assert_one_clear_line(failed, run_dir / "metrics.jsonl")
    records = _assert_whole_lines(run_dir / "metrics.jsonl")
    assert full_at - 4 < records[-1]["batches"] < full_at + 32
    assert not (run_dir / "result.json").exists()
    latest = CheckpointStore(run_dir / "checkpoints").load()
    assert (latest.meta["batches"] if latest else None) == (64 if full_at > 64 else None)
    assert _leftovers(run_dir) == []

    filler.unlink()
    resumed = run_cli([*_disk_args(run_dir), "resume=true"], cwd=tmp_path, env=NO_TB)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert ("resumed from" in resumed.stdout) == (latest is not None)
    _assert_same_run(run_dir, disk_reference)
    assert _leftovers(run_dir) == []


@needs_root
@pytest.mark.parametrize(
    ("short", "fails_on"),
    [(1, f"{128:010d}/state.json"), (0, "latest.json")],  # pages short for checkpoint 128
)
def test_disk_full_while_writing_a_checkpoint(
    tmp_path: Path,
    tmpfs: Callable[[Path, int], Path],
    disk_reference: Path,
    short: int,
    fails_on: str,
) -> None:
    run_dir = tmp_path / "run"
    checkpoints = tmpfs(run_dir / "checkpoints", 64)
    page = _page(checkpoints)
    files = max(  # a checkpoint's trial.json and state.json
        sum(_pages(p.stat().st_size, page) for p in kept.iterdir())
        for kept in (disk_reference / "checkpoints").iterdir()
        if kept.is_dir()
    )
    assert files >= 2
    # Room for checkpoint 64 and its two pointers, then for checkpoint 128's files but for
    # `short` pages: state.json fails half written (1), or the new latest.json finds no room.
    filler = _fill(checkpoints, (files + 2 + files - short) * page)

    failed = run_cli(_disk_args(run_dir), cwd=tmp_path, env=NO_TB)
    _assert_one_clear_line(failed, checkpoints / fails_on)
    records = _assert_whole_lines(run_dir / "metrics.jsonl")
    assert records[-1]["batches"] == 128  # reported, then the checkpoint failed
    latest = json.loads((checkpoints / "latest.json").read_text())
    assert latest["name"] == f"{64:010d}"
    loaded = CheckpointStore(checkpoints).load()
    assert loaded is not None and loaded.path == checkpoints / latest["name"]
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        f"{64:010d}",
        "best.json",
        "filler",
        "latest.json",
    ]
    assert _leftovers(run_dir) == []

    filler.unlink()
    resumed = run_cli([*_disk_args(run_dir), "resume=true"], cwd=tmp_path, env=NO_TB)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {checkpoints / f'{64:010d}'}: 64 batches" in resumed.stdout
    _assert_same_run(run_dir, disk_reference)
    assert _leftovers(run_dir) == []


# -- 3. USR2 to several trials of a Slurm sweep at once ------------------------------------------

SLURM = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
]
POINTS = ("0.01", "0.02", "0.03", "0.05")
PREEMPTED = [
    "searcher.max_length=64 batches",
    "scheduling_unit=4",
    "min_checkpoint_period=8 batches",
    "seed=5",
]


def _scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=False
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _checkpointed(trial_dir: Path) -> bool:
    return (trial_dir / "checkpoints" / "latest.json").exists()


def _trained(trial_dir: Path) -> int:
    try:
        return max((r["batches"] for r in read_metrics(trial_dir)), default=0)
    except (OSError, ValueError):
        return 0


def _steps(job: str) -> list[str]:
    """The job's running steps (``srun``'s, where the trial runs), as Slurm's own warning
    signal reaches them. Signalling an array task by its job id makes this Slurm (22.05)
    retry, and signal again, for seconds while other tasks of the array are pending."""
    out = subprocess.run(
        ["squeue", "-h", "-s", "-j", job, "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout
    steps = [s for s in out.split() if not s.endswith((".batch", ".extern"))]
    assert steps, f"job {job} runs no step"
    return steps


def _jobs(driver_log: Path) -> dict[int, str]:
    found = re.findall(r"trial (\d+): Slurm job (\S+),", driver_log.read_text())
    return {int(trial): job for trial, job in found}


@needs_slurm
def test_usr2_to_several_running_trials_at_once_ends_as_uninterrupted(tmp_path: Path) -> None:
    if IN_CI and not AVAILABLE:
        pytest.fail("CI must run the Slurm tests: scripts/local-slurm.sh start did not succeed")
    grid = ["searcher.name=grid", f"hyperparameters.lr=choice({','.join(POINTS)})"]
    sweep_dir = tmp_path / "s"
    log = tmp_path / "driver.log"
    driver = start_driver(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={sweep_dir}",
            *SLURM,
            *grid,
            *PREEMPTED,
            f"searcher.max_concurrent_trials={len(POINTS)}",
            "+hyperparameters.seconds_per_batch=0.08",
        ],
        cwd=tmp_path,
        log=log,
    )
    try:
        waves, jobs = _preempt_in_waves(sweep_dir, log, deadline=time.monotonic() + 150)
        assert driver.wait(timeout=150) == 0, log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
    # Several at once: local-slurm.sh's debug partition runs two jobs per CPU (OverSubscribe),
    # so even a 2-CPU node has all four running together.
    assert max(len(wave) for wave in waves) >= 3, waves
    assert sorted(t for wave in waves for t in wave) == list(range(len(POINTS)))

    with open(sweep_dir / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert sorted(int(r["trial_id"]) for r in table) == list(range(len(POINTS)))  # once each
    assert {r["status"] for r in table} == {"COMPLETED"}
    for trial, lr in enumerate(POINTS):
        reference = tmp_path / f"ref{trial}"
        done = run_cli(
            [
                "+experiment=quadratic",
                f"hydra.run.dir={reference}",
                f"hyperparameters.lr={lr}",
                *PREEMPTED,
            ],
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        trial_dir = sweep_dir / str(trial)
        # A stop reports the training window it cuts short: only validations line up.
        assert _validations(trial_dir) == _validations(reference)
        got, want = _result(trial_dir), _result(reference)
        keys = ("records", "batches", "steps", "metric", "validation")
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
        assert _trial_state(trial_dir) == _trial_state(reference)
        train_log = (trial_dir / "train.log").read_text()
        assert train_log.count("stopped at batch") == 1 and train_log.count("resumed from") == 1
        assert train_log.count("requeueing job") == 1
        assert f"requeueing job {jobs[trial]} (restart 1)" in train_log


def _preempt_in_waves(
    sweep_dir: Path, driver_log: Path, deadline: float
) -> tuple[list[list[int]], dict[int, str]]:
    """Send USR2, in one ``scancel`` call, to every running trial not yet pre-empted, once
    each has a checkpoint and none is still starting; until every trial was pre-empted once.
    Returns the waves (trial ids signalled together) and each trial's Slurm job.

    A wave waits for two trials or more unless no other is waiting to run, or one of them
    nears its end (a node with fewer CPUs than trials runs them in turns).
    """
    waves: list[list[int]] = []
    done: set[int] = set()
    jobs: dict[int, str] = {}
    while len(done) < len(POINTS):
        assert time.monotonic() < deadline, (waves, driver_log.read_text())
        jobs = _jobs(driver_log)
        states = {trial: _scontrol(job) for trial, job in jobs.items() if trial not in done}
        running = [t for t, s in states.items() if s.get("JobState") == "RUNNING"]
        ready = [t for t in running if _checkpointed(sweep_dir / str(t))]
        waiting = len(states) - len(running)
        late = any(_trained(sweep_dir / str(t)) >= 40 for t in ready)  # of 64: go now
        if ready and len(ready) == len(running) and (len(ready) >= 2 or not waiting or late):
            steps = [step for t in ready for step in _steps(jobs[t])]
            signalled = subprocess.run(
                ["scancel", "--signal=USR2", *steps], capture_output=True, text=True, timeout=30
            )
            assert signalled.returncode == 0, (steps, signalled.stderr)
            waves.append(sorted(ready))
            while any(_scontrol(jobs[t]).get("Restarts") == "0" for t in ready):
                assert time.monotonic() < deadline, (waves, driver_log.read_text())
                time.sleep(0.2)
            done.update(ready)
        time.sleep(0.1)
    return waves, jobs
