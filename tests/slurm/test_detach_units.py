"""Detached sweeps without a cluster: the driver's settings, what ``detflow status`` reads
and the order in which ``detflow cancel`` stops things (a recorded fake ``slurm`` command
stands in for squeue/sacct/scancel). The real thing: ``tests/slurm/test_detach.py``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from detflow._core.detached import DRIVER_LOG, DriverRecord
from detflow._core.errors import ConfigError, NotResultsError
from detflow._hydra.detach import (
    DriverSettings,
    _script,
    detach_requested,
    driver_settings,
    long_sweep_hint,
    trials_under,
)
from detflow._results.status import cancel_sweep, sweep_status

SLURM_TARGET = "hydra_plugins.detflow_launchers.slurm.DetflowSlurmLauncher"
LOCAL_TARGET = "hydra_plugins.detflow_launchers.local.DetflowLocalLauncher"


def _config(target: str, **sweeper: object) -> object:
    return OmegaConf.create(
        {
            "hydra": {
                "sweeper": sweeper,
                "launcher": {"_target_": target, "submitit_folder": ".detflow/slurm/%j"},
                "job": {"name": "train"},
            }
        }
    )


def test_detach_needs_the_slurm_launcher_and_a_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DETFLOW_SWEEP_DRIVER", raising=False)
    assert detach_requested(_config(SLURM_TARGET, detach=True))  # type: ignore[arg-type]
    assert not detach_requested(_config(SLURM_TARGET, detach=False))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.detach .*detflow_slurm"):
        detach_requested(_config(LOCAL_TARGET, detach=True))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="true or false"):
        detach_requested(_config(SLURM_TARGET, detach="yes"))  # type: ignore[arg-type]
    # the driver job itself runs the same command: it searches, it does not detach again
    monkeypatch.setenv("DETFLOW_SWEEP_DRIVER", "/some/sweep")
    assert not detach_requested(_config(SLURM_TARGET, detach=True))  # type: ignore[arg-type]


def test_driver_settings_are_checked_and_named() -> None:
    config = _config(SLURM_TARGET, driver={"time": 30, "partition": "debug"})
    assert driver_settings(config) == DriverSettings(partition="debug", time=30)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.driver\.cpus .*one of account"):
        driver_settings(_config(SLURM_TARGET, driver={"cpus": 2}))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.driver\.time = -1"):
        DriverSettings(time=-1)
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.driver\.mem"):
        DriverSettings(mem="1G\n#SBATCH --x")


def test_the_driver_script_marks_the_job_and_quotes_the_command(tmp_path: Path) -> None:
    text = _script(tmp_path / "it's", "/work dir", ["python", "train.py", "x=a b"])
    assert f"export DETFLOW_SWEEP_DRIVER='{tmp_path}/it'\"'\"'s'" in text
    assert "cd '/work dir' || exit 1" in text
    assert text.rstrip().endswith("exec python train.py 'x=a b'")
    config = _config(SLURM_TARGET)
    assert trials_under(config, tmp_path) == tmp_path / ".detflow/slurm"  # type: ignore[arg-type]


def test_a_long_slurm_sweep_says_how_to_detach(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DETFLOW_SWEEP_DRIVER", raising=False)
    hint = long_sweep_hint(_config(SLURM_TARGET), 8, 2)  # type: ignore[arg-type]
    assert (
        hint is not None and "hydra.sweeper.detach=true" in hint and "8 trials, 2 at once" in hint
    )
    assert long_sweep_hint(_config(SLURM_TARGET), 2, 2) is None  # type: ignore[arg-type]
    assert long_sweep_hint(_config(LOCAL_TARGET), 8, 2) is None  # type: ignore[arg-type]


class FakeSlurm:
    """squeue/sacct/scancel as a tiny in-memory queue; every call recorded."""

    def __init__(self, sweep: Path) -> None:
        self.calls: list[list[str]] = []
        script = f"{sweep}/.detflow/slurm/.submission_file_x.sh"
        self.queue = {"7": ["RUNNING", "node1", "1:00", "/elsewhere/driver.sh"]}
        self.queue["8"] = ["RUNNING", "node2", "0:10", script]
        self.queue["9"] = ["PENDING", "", "0:00", script]
        self.queue["99"] = ["RUNNING", "node1", "0:10", "/another/sweep/.detflow/slurm/y.sh"]

    def __call__(self, args: Sequence[str]) -> str:
        args = list(args)
        self.calls.append(args)
        if args[0] == "squeue" and "-j" in args:
            job = self.queue.get(args[args.index("-j") + 1])
            return "" if job is None else "|".join(job[:3]) + "\n"
        if args[0] == "squeue":
            return "".join(f"{j}|{'|'.join(v)}\n" for j, v in self.queue.items())
        if args[0] == "sacct":
            return "CANCELLED by 0|node1|00:01:00\n"
        if args[0] == "scancel" and "--signal=USR2" in args:
            for job_id in args[2:]:
                self.queue[job_id][0] = "PENDING"  # it checkpointed and requeued itself
            return ""
        if args[0] == "scancel":
            for job_id in (a for a in args[1:] if not a.startswith("-")):
                self.queue.pop(job_id, None)
        return ""


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "s"
    (sweep / "0").mkdir(parents=True)
    (sweep / "results.csv").write_text(
        "trial_id,status,rung,lr,batches,best_metric,last_metric,restarts,error,dir,parent\n"
        f"0,COMPLETED,0,0.1,8,0.5,0.5,0,,{sweep}/0,\n"
        f"1,RUNNING,0,0.2,,,,0,,{sweep}/1,\n"
        f"2,PENDING,0,0.3,,,,0,,{sweep}/2,\n"
    )
    DriverRecord(
        "7", "detflow-sweep-train", ["python", "train.py"], "/w", f"{sweep}/.detflow/slurm"
    ).write(sweep)
    (sweep / DRIVER_LOG).write_text(
        "[..][HYDRA] trial 1: Slurm job 8, log x\n[..][HYDRA] trial 2: Slurm job 9, log y\n"
    )
    return sweep


def test_status_shows_trials_by_status_the_sweeps_jobs_and_the_driver(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    slurm = FakeSlurm(sweep)
    status = sweep_status(sweep, slurm)
    assert status.trials == {"COMPLETED": [0], "RUNNING": [1], "PENDING": [2]}
    assert [(j.job_id, j.state, j.trial_id) for j in status.jobs] == [
        ("8", "RUNNING", 1),
        ("9", "PENDING", 2),
    ]  # not the driver's, not another sweep's
    assert status.driver is not None and status.driver.state == "RUNNING"
    text = "\n".join(status.lines())
    assert "driver: Slurm job 7 (detflow-sweep-train) RUNNING on node1" in text
    assert "job 8  trial 1  RUNNING  node2" in text
    slurm.queue.pop("7")  # the driver ended: sacct says how
    assert sweep_status(sweep, slurm).driver.state == "CANCELLED"  # type: ignore[union-attr]


def test_cancel_stops_the_driver_then_checkpoints_then_cancels_the_trials(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    slurm = FakeSlurm(sweep)
    slurm.queue["7"][0] = "RUNNING"
    original = slurm.__call__

    def driver_ends_on_sigint(args: Sequence[str]) -> str:
        if list(args[:3]) == ["scancel", "--batch", "--signal=INT"]:
            slurm.queue.pop("7")
        return original(args)

    report = cancel_sweep(sweep, slurm=driver_ends_on_sigint, driver_wait_s=1, checkpoint_wait_s=1)
    scancels = [c for c in slurm.calls if c[0] == "scancel"]
    assert scancels == [
        ["scancel", "--batch", "--signal=INT", "7"],
        ["scancel", "--signal=USR2", "8"],
        ["scancel", "8", "9"],
    ]
    assert (report.driver, report.checkpointed, report.cancelled) == ("7", ["8"], ["8", "9"])
    assert "99" in slurm.queue  # another sweep's job is left alone
    assert report.resume == "cd /w && python train.py"


def test_status_of_a_detached_sweep_whose_driver_has_not_started(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    DriverRecord("7", "detflow-sweep-train", ["python"], "/w", f"{sweep}/.detflow/slurm").write(
        sweep
    )
    status = sweep_status(sweep, FakeSlurm(sweep))
    assert status.trials == {} and status.driver is not None
    assert "trials: 0" in status.lines()
    with pytest.raises(NotResultsError):
        sweep_status(tmp_path / "nothing", FakeSlurm(sweep))
