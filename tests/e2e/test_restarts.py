"""``max_restarts``, ``checkpoint_storage`` and ``perform_initial_validation`` end to end.

A trial process killed with ``SIGKILL`` in the middle of a sweep (the local launcher; found by
the ``.lock`` of its run directory, which its process holds), and a Slurm job that receives
``SIGUSR2`` within a second of its start, both end COMPLETED with the metrics of an
uninterrupted run; deterministic failures are not retried; the checkpoint policy prunes what
it says and ASHA still promotes from checkpoints.
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
from pathlib import Path
from typing import Any

import pytest

from tests.slurm_support import AVAILABLE, IN_CI, needs_slurm
from tests.support import REPO, read_metrics, run_cli, start_driver

SLOW = [
    "+experiment=quadratic",
    "searcher.max_length=64 batches",
    "scheduling_unit=4",
    "min_checkpoint_period=8 batches",
    "min_validation_period=16 batches",
    "seed=3",
]


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "results.csv") as handle:
        return list(csv.DictReader(handle))


def _trained(run_dir: Path) -> int:
    try:
        return max((r["batches"] for r in read_metrics(run_dir)), default=0)
    except (OSError, ValueError, KeyError):
        return 0


def _holder_of(lock: Path) -> int | None:
    """The pid of the process that has ``lock`` open (a trial holds its run dir's lock)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == str(lock):
                    return int(entry.name)
        except OSError:
            continue
    return None


def _wait(condition: Any, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}:\n{log.read_text()}"
        time.sleep(0.05)


def _validations(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    return [
        (r["batches"], r["metrics"]) for r in read_metrics(run_dir) if r["kind"] == "validation"
    ]


def _result(run_dir: Path) -> dict[str, Any]:
    result = json.loads((run_dir / "result.json").read_text())
    return {k: result[k] for k in ("records", "batches", "steps", "metric", "validation")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every killed-and-restarted trial must equal."""
    tmp = tmp_path_factory.mktemp("reference")
    done = run_cli([*SLOW, f"hydra.run.dir={tmp / 'run'}"], cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "run"


def _kill_trial_mid_sweep(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    """A one-trial sweep whose trial is killed with SIGKILL after its first checkpoints."""
    sweep_dir = tmp_path / "s"
    log = tmp_path / "driver.log"
    driver = start_driver(
        [
            "-m",
            *SLOW,
            f"hydra.sweep.dir={sweep_dir}",
            "+hyperparameters.seconds_per_batch=0.03",
            *extra,
        ],
        cwd=tmp_path,
        log=log,
    )
    trial = sweep_dir / "0"
    try:
        _wait(lambda: _trained(trial) >= 20, 90, "the trial never trained 20 batches", log)
        pid = _holder_of((trial / ".lock").absolute())
        assert pid is not None, "no process holds the trial's lock"
        os.kill(pid, signal.SIGKILL)
    except BaseException:
        driver.kill()
        raise
    return driver, log


def test_a_trial_killed_with_sigkill_restarts_and_ends_as_an_uninterrupted_run(
    tmp_path: Path, reference: Path
) -> None:
    driver, log = _kill_trial_mid_sweep(tmp_path)
    assert driver.wait(timeout=120) == 0, log.read_text()
    output = log.read_text()
    assert (
        "trial 0 ended without a result (killed by signal 9); restart 1 of 5 from its last "
        "checkpoint"
    ) in output
    assert "restarting trial 0 to 64 batches" in output
    assert "1 trials: 1 completed, 0 stopped early, 0 failed" in output
    assert "1 restart (max_restarts)" in output
    (row,) = _rows(tmp_path / "s")
    assert (row["status"], row["restarts"], row["error"]) == ("COMPLETED", "1", "")
    trial = tmp_path / "s" / "0"
    resumed = re.findall(r"resumed from \S+: (\d+) batches", (trial / "train.log").read_text())
    assert len(resumed) == 1 and 16 <= int(resumed[0]) < 64  # from its last checkpoint
    assert _validations(trial) == _validations(reference)
    assert _result(trial) == _result(reference)
    shown = subprocess.run(
        [sys.executable, "-m", "detflow._results.cli", "summary", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    header, first = shown.splitlines()[1:3]
    assert header.split()[-1] == "restarts" and first.split()[-1] == "1", shown


def test_max_restarts_0_keeps_a_killed_trial_failed(tmp_path: Path) -> None:
    driver, log = _kill_trial_mid_sweep(tmp_path, "max_restarts=0")
    assert driver.wait(timeout=120) == 1, log.read_text()
    (row,) = _rows(tmp_path / "s")
    assert (row["status"], row["restarts"]) == ("FAILED", "0")
    assert row["error"] == "the trial process died (killed by signal 9)"
    assert "restart" not in log.read_text().replace("max_restarts", "")


def test_a_nan_loss_and_a_refused_config_are_not_retried(tmp_path: Path) -> None:
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={tmp_path / 'nan'}",
            "searcher.name=grid",
            "+hyperparameters.fail_at_batch=choice(0,5)",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    table = _rows(tmp_path / "nan")
    assert [(r["status"], r["restarts"]) for r in table] == [("COMPLETED", "0"), ("FAILED", "0")]
    assert table[1]["error"] == "TrialError: loss is nan at batch 5"
    assert "restart" not in done.stdout.replace("max_restarts", "")

    typo = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={tmp_path / 'typo'}",
            "searcher.metric=validation_acc",
        ],
        cwd=tmp_path,
    )
    assert typo.returncode == 2, typo.stdout + typo.stderr
    (row,) = _rows(tmp_path / "typo")
    assert (row["status"], row["restarts"]) == ("FAILED", "0")
    assert "restart" not in typo.stdout.replace("max_restarts", "")


# -- Slurm: SIGUSR2 within a second of a job's start --------------------------------------------
SLURM = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
]


def _scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=False
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _steps(job: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-s", "-j", job, "-o", "%i"], capture_output=True, text=True, check=False
    ).stdout
    return [s for s in out.split() if not s.endswith((".batch", ".extern"))]


@needs_slurm
def test_a_slurm_job_signalled_as_it_starts_ends_completed_as_uninterrupted(
    tmp_path: Path, reference: Path
) -> None:
    if IN_CI and not AVAILABLE:
        pytest.fail("CI must run the Slurm tests: scripts/local-slurm.sh start did not succeed")
    sweep_dir = tmp_path / "s"
    log = tmp_path / "driver.log"
    driver = start_driver(
        [
            "-m",
            *SLOW,
            f"hydra.sweep.dir={sweep_dir}",
            *SLURM,
            "+hyperparameters.seconds_per_batch=0.03",
        ],
        cwd=tmp_path,
        log=log,
    )
    signalled: list[tuple[int, float]] = []  # (the job's restarts, seconds from running to signal)
    try:
        deadline = time.monotonic() + 240
        job = None
        while job is None:
            assert time.monotonic() < deadline, log.read_text()
            found = re.search(r"trial 0: Slurm job (\S+),", log.read_text())
            job = found.group(1) if found else None
            time.sleep(0.05)
        # The job's first start, then its requeued start: USR2 to its step the moment it runs.
        for restart in ("0", "1"):
            while True:
                assert time.monotonic() < deadline, log.read_text()
                state = _scontrol(job)
                steps = _steps(job) if state.get("JobState") == "RUNNING" else []
                if state.get("Restarts") == restart and steps:
                    break
                if driver.poll() is not None:
                    break
                time.sleep(0.02)
            if driver.poll() is not None:
                break
            started = time.monotonic()
            subprocess.run(["scancel", "--signal=USR2", *steps], check=False, timeout=30)
            signalled.append((int(restart), time.monotonic() - started))
            while _scontrol(job).get("Restarts") == restart and driver.poll() is None:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        assert driver.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
    assert signalled and all(after < 1.0 for _, after in signalled), signalled
    (row,) = _rows(sweep_dir)
    assert row["status"] == "COMPLETED", row
    trial = sweep_dir / "0"
    assert _validations(trial) == _validations(reference)
    assert _result(trial) == _result(reference)


# -- checkpoint_storage -------------------------------------------------------------------------
def _with_checkpoints(sweep_dir: Path) -> list[int]:
    found = []
    for trial_dir in sorted(sweep_dir.iterdir(), key=lambda p: p.name):
        checkpoints = trial_dir / "checkpoints"
        if (
            trial_dir.name.isdigit()
            and checkpoints.is_dir()
            and any(p.is_dir() and p.name.isdigit() for p in checkpoints.iterdir())
        ):
            found.append(int(trial_dir.name))
    return sorted(found)


POLICY = [
    "checkpoint_storage.save_experiment_best=1",
    "checkpoint_storage.save_trial_best=0",
    "checkpoint_storage.save_trial_latest=0",
]


def test_a_grid_with_save_experiment_best_1_keeps_checkpoints_in_one_trial(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "s"
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={sweep_dir}",
            "searcher.name=grid",
            "hyperparameters.lr=choice(0.01,0.02,0.05,0.1)",
            "searcher.max_length=32 batches",
            "min_checkpoint_period=8 batches",
            *POLICY,
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    best = re.search(r"best: trial (\d+)", done.stdout)
    assert best is not None
    assert _with_checkpoints(sweep_dir) == [int(best.group(1))]
    pruned = [line for line in done.stdout.splitlines() if "deleted" in line]
    assert len([line for line in pruned if "not among the best 1 trials" in line]) == 3


def test_asha_with_a_policy_still_promotes_from_checkpoints(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={sweep_dir}",
            "searcher.name=asha",
            "searcher.max_trials=4",
            "searcher.divisor=2",
            "searcher.max_rungs=2",
            "searcher.max_length=32 batches",
            "min_checkpoint_period=8 batches",
            "hyperparameters.lr=tag(log, interval(0.01, 0.2))",
            "searcher.max_concurrent_trials=2",
            *POLICY,
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = _rows(sweep_dir)
    promoted = [r for r in table if r["rung"] == "1"]
    assert promoted, done.stdout
    for row in promoted:  # continued from its rung-0 checkpoint at batch 16, not from 0
        train_log = (sweep_dir / row["trial_id"] / "train.log").read_text()
        assert re.findall(r"resumed from \S+: (\d+) batches", train_log) == ["16"], train_log
        records = read_metrics(sweep_dir / row["trial_id"])
        assert [r["batches"] for r in records if r["kind"] == "validation"][-1] == 32
    best = re.search(r"best: trial (\d+)", done.stdout)
    assert best is not None
    assert _with_checkpoints(sweep_dir) == [int(best.group(1))]


def test_storage_path_takes_a_sweeps_checkpoints_and_the_run_dirs_link_there(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "scratch"
    sweep_dir = tmp_path / "s"
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={sweep_dir}",
            "searcher.name=grid",
            "hyperparameters.lr=choice(0.01,0.05)",
            "searcher.max_length=16 batches",
            f"checkpoint_storage.storage_path={storage}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for trial in ("0", "1"):
        link = sweep_dir / trial / "checkpoints"
        assert link.is_symlink() and link.resolve().parent == (storage / "quadratic").resolve()
        assert (link / "latest.json").exists()


# -- perform_initial_validation -----------------------------------------------------------------
@pytest.mark.parametrize("script", ["train.py", "trials.quadratic_loop"])
def test_perform_initial_validation_reports_batch_0_once(tmp_path: Path, script: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        entry = [str(REPO / script)] if script == "train.py" else ["-m", script]
        return subprocess.run(
            [sys.executable, *entry, "+experiment=quadratic", *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    run_dir = tmp_path / "run"
    common = [f"hydra.run.dir={run_dir}", "perform_initial_validation=true"]
    first = run(*common, "searcher.max_length=1 epochs")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "at batch 0, before training; validation_loss=" in first.stdout
    again = run(*common, "searcher.max_length=2 epochs", "resume=true")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "before training" not in again.stdout
    batches = [r["batches"] for r in read_metrics(run_dir) if r["kind"] == "validation"]
    assert batches == [0, 32, 64]


# -- the user's own exceptions ------------------------------------------------------------------
SCRIPT = """
import os
from pathlib import Path

import detflow


class Fit(detflow.Trial):
    def __init__(self, run):
        self.run, self.w = run, 0.0

    def training_data(self, epoch):
        return [[1.0] * self.run.per_slot_batch_size] * 8

    def train_batch(self, batch):
        self.w += 0.1 * (3.0 - self.w)
        marker = Path(os.environ["MARKER"])
        if self.w > 1.5 and (os.environ.get("ALWAYS") or not marker.exists()):
            marker.touch()
            raise RuntimeError("boom")
        return {"loss": (self.w - 3.0) ** 2}

    def validation_data(self):
        return [[0.0]]

    def evaluate_batch(self, batch):
        return {"loss": (self.w - 3.0) ** 2}

    def state_dict(self):
        return {"w": self.w}

    def load_state_dict(self, state):
        self.w = state["w"]


detflow.register_experiment(
    "fit",
    {
        "hyperparameters": {"global_batch_size": 2},
        "searcher": {"max_length": "16 batches"},
        "min_checkpoint_period": "2 batches",
    },
)


@detflow.main()
def train(cfg):
    run = detflow.init(cfg)
    run.fit(Fit(run))


if __name__ == "__main__":
    train()
"""


def _own_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python fit.py ARGS +experiment=fit``: raises once (``ALWAYS``: every time) past w 1.5,
    at batch 7; ``MARKER`` names the file that says it raised."""
    (tmp_path / "fit.py").write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(tmp_path / "fit.py"), *args, "+experiment=fit"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_users_exception_once_is_retried_and_twice_at_one_batch_is_not(
    tmp_path: Path,
) -> None:
    single = _own_script(tmp_path, f"hydra.run.dir={tmp_path / 'run'}", MARKER=str(tmp_path / "m0"))
    assert single.returncode == 1  # a single run is not restarted: it raised, it failed
    once = _own_script(
        tmp_path, "-m", f"hydra.sweep.dir={tmp_path / 'once'}", MARKER=str(tmp_path / "m1")
    )
    assert once.returncode == 0, once.stdout + once.stderr
    assert "trial 0 raised RuntimeError: boom at batch 7; restart 1 of 5" in once.stdout
    (row,) = _rows(tmp_path / "once")
    assert (row["status"], row["restarts"], row["batches"]) == ("COMPLETED", "1", "16")
    resumed = re.findall(
        r"resumed from \S+: (\d+) batches", (tmp_path / "once" / "0" / "fit.log").read_text()
    )
    assert resumed == ["6"]  # its last checkpoint (every 2 batches) before batch 7

    always = _own_script(
        tmp_path,
        "-m",
        f"hydra.sweep.dir={tmp_path / 'always'}",
        MARKER=str(tmp_path / "m2"),
        ALWAYS="1",
    )
    assert always.returncode == 1, always.stdout + always.stderr
    (row,) = _rows(tmp_path / "always")
    assert (row["status"], row["restarts"]) == ("FAILED", "1")
    assert row["error"] == (
        "RuntimeError: boom (raised again at batch 7: not retried; after 1 restart)"
    )
