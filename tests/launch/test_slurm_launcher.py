"""``hydra/launcher=detflow_slurm`` against a real Slurm (``scripts/local-slurm.sh``)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark

from tests.slurm_support import _slurm_must_run_in_ci, needs_slurm
from tests.support import REPO, read_metrics, run_cli, start_driver

pytestmark = [needs_slurm, mark.usefixtures(_slurm_must_run_in_ci.__name__)]
_ = _slurm_must_run_in_ci

SLURM = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
]
GOLDEN = Path(__file__).parent / "golden"


@mark.parametrize("launcher_name, overrides", [("detflow_slurm", SLURM[1:])])
class TestDetflowSlurmLauncher(LauncherTestSuite):
    """Hydra's launcher suite, every job a real Slurm job."""


@mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        (
            {
                "defaults": [{"override hydra/launcher": "detflow_slurm"}, "_self_"],
                "hydra": {"launcher": {"partition": "debug", "time": 10, "gpus_per_node": 0}},
            },
            ["-m"],
        )
    ],
)
class TestDetflowSlurmLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite, every job a real Slurm job."""


def rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "results.csv") as handle:
        return list(csv.DictReader(handle))


def sweep(cwd: Path, sweep_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["-m", "+experiment=quadratic", f"hydra.sweep.dir={sweep_dir}", *SLURM, *args],
        cwd=cwd,
        timeout=300,
    )


AWKWARD = 'it\'s a "dir" with  spaces'


def _quoted_override(path: Path) -> str:
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_dry_run_prints_the_golden_sbatch_script_and_submits_nothing(tmp_path: Path) -> None:
    sweep_dir = tmp_path / AWKWARD / "sweep"
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={_quoted_override(sweep_dir)}",
            *SLURM,
            "hydra.launcher.dry_run=true",
            "hydra.launcher.setup=[module load cuda]",
            "hydra.launcher.gpus_per_node=null",
            "resources.slots_per_trial=2",
            "hyperparameters.global_batch_size=8",
            "searcher.name=grid",
            "hyperparameters.lr=choice(0.01,0.02)",
            "searcher.max_concurrent_trials=2",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    printed = [line for line in done.stdout.splitlines() if not re.match(r"^\[\d{4}-", line)]
    script = "\n".join(printed).replace(str(tmp_path), "$TMP").replace(str(REPO), "$REPO")
    script = script.replace(sys.executable, "$PYTHON")
    golden = (GOLDEN / "sbatch_array.txt").read_text()
    assert script == golden
    assert not (sweep_dir / ".detflow" / "slurm").exists()
    assert not (sweep_dir / "0").exists()


def test_awkward_paths_are_quoted_for_real(tmp_path: Path) -> None:
    sweep_dir = tmp_path / AWKWARD / "sweep"
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={_quoted_override(sweep_dir)}",
            *SLURM,
            "searcher.name=grid",
            "hyperparameters.lr=choice(0.01,0.02)",
            "searcher.max_concurrent_trials=2",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["status"] for r in rows(sweep_dir)] == ["COMPLETED", "COMPLETED"]


def _without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "window")} for r in records]


def test_local_and_slurm_write_the_same_hparams_and_metrics(tmp_path: Path) -> None:
    args = ["searcher.name=grid", "hyperparameters.lr=choice(0.03)", "seed=7"]
    local = run_cli(
        [
            "-m",
            "+experiment=quadratic",
            f"hydra.sweep.dir={tmp_path / 'local'}",
            "hydra/launcher=detflow_local",
            *args,
        ],
        cwd=tmp_path,
    )
    assert local.returncode == 0, local.stdout
    slurm = sweep(tmp_path, tmp_path / "slurm", *args)
    assert slurm.returncode == 0, slurm.stdout
    for name in ("hparams.json",):
        assert (tmp_path / "local" / "0" / name).read_text() == (
            tmp_path / "slurm" / "0" / name
        ).read_text()
    assert _without_times(read_metrics(tmp_path / "local" / "0")) == _without_times(
        read_metrics(tmp_path / "slurm" / "0")
    )


def test_a_failed_trial_shows_its_error_and_log(tmp_path: Path) -> None:
    done = sweep(
        tmp_path,
        tmp_path / "s",
        "searcher.name=grid",
        "+hyperparameters.fail_at_batch=choice(0,5)",
        "searcher.max_concurrent_trials=2",
    )
    assert done.returncode == 1
    table = rows(tmp_path / "s")
    assert [r["status"] for r in table] == ["COMPLETED", "FAILED"]
    assert table[1]["error"] == "TrialError: loss is nan at batch 5"
    log_line = next(line for line in done.stdout.splitlines() if "trial 1 failed" in line)
    log_path = Path(re.search(r"\(log: (.*)\)", log_line).group(1))  # type: ignore[union-attr]
    assert "Traceback" in log_path.read_text() + log_path.with_suffix(".err").read_text()


def _job_id(driver_output: Path, trial: int, deadline: float) -> str:
    while time.monotonic() < deadline:
        match = re.search(rf"trial {trial}: Slurm job (\S+),", driver_output.read_text())
        if match:
            return match.group(1).rstrip(",")
        time.sleep(0.1)
    raise AssertionError("the trial was never submitted")


def _trained(trial_dir: Path) -> int:
    try:
        records = read_metrics(trial_dir)
    except (OSError, ValueError):
        return 0
    return max((r["batches"] for r in records), default=0)


def _restarts(job_id: str) -> int:
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"Restarts=(\d+)", out)
    return int(match.group(1)) if match else 0


def _state(job_id: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"JobState=(\S+)", out)
    return match.group(1) if match else "GONE"


SLOW = [
    "searcher.max_length=96 batches",
    "scheduling_unit=4",
    "min_checkpoint_period=1 epochs",
    "+hyperparameters.seconds_per_batch=0.06",
    "seed=11",
]


def _slow_slurm_sweep(tmp_path: Path, log: Path) -> subprocess.Popen[str]:
    """One slow quadratic trial on Slurm, swept in the background into ``tmp_path/s``."""
    args = ["-m", "+experiment=quadratic", f"hydra.sweep.dir={tmp_path / 's'}", *SLURM, *SLOW]
    return start_driver(args, cwd=tmp_path, log=log)


def test_three_usr2_preemptions_end_with_the_metrics_of_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    reference = run_cli(
        [
            "+experiment=quadratic",
            f"hydra.run.dir={tmp_path / 'ref'}",
            *[a for a in SLOW if "seconds_per_batch" not in a],
        ],
        cwd=tmp_path,
    )
    assert reference.returncode == 0, reference.stdout
    out = tmp_path / "driver.log"
    sweep_dir = tmp_path / "s"
    driver = _slow_slurm_sweep(tmp_path, out)
    deadline = time.monotonic() + 240
    job = _job_id(out, 0, deadline)
    for signal_at, restart in ((12, 0), (40, 1), (70, 2)):
        while time.monotonic() < deadline and not (
            _restarts(job) == restart
            and _state(job) == "RUNNING"
            and _trained(sweep_dir / "0") >= signal_at
        ):
            time.sleep(0.05)
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        while time.monotonic() < deadline and _restarts(job) == restart:
            time.sleep(0.2)
    assert driver.wait(timeout=max(1, deadline - time.monotonic())) == 0, out.read_text()
    assert _restarts(job) == 3
    log = (sweep_dir / "0" / "train.log").read_text()
    assert log.count("stopped at batch") == 3 and log.count("resumed from") == 3
    validations = [
        (r["batches"], r["metrics"])
        for r in read_metrics(sweep_dir / "0")
        if r["kind"] == "validation"
    ]
    expected = [
        (r["batches"], r["metrics"])
        for r in read_metrics(tmp_path / "ref")
        if r["kind"] == "validation"
    ]
    assert validations == expected
    got = json.loads((sweep_dir / "0" / "result.json").read_text())
    want = json.loads((tmp_path / "ref" / "result.json").read_text())
    assert {k: got[k] for k in ("records", "batches", "steps", "metric", "validation")} == {
        k: want[k] for k in ("records", "batches", "steps", "metric", "validation")
    }


def test_a_cancelled_job_is_reported_failed_not_waited_on(tmp_path: Path) -> None:
    out = tmp_path / "driver.log"
    driver = _slow_slurm_sweep(tmp_path, out)
    deadline = time.monotonic() + 120
    job = _job_id(out, 0, deadline)
    while _trained(tmp_path / "s" / "0") < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    subprocess.run(["scancel", job], check=True)
    cancelled = time.monotonic()
    assert driver.wait(timeout=60) == 1, out.read_text()
    assert time.monotonic() - cancelled < 30
    (row,) = rows(tmp_path / "s")
    assert row["status"] == "FAILED"
    assert "CANCELLED" in row["error"] and job in row["error"]


def test_digits_asha_runs_on_slurm_in_parallel_with_promotions(tmp_path: Path) -> None:
    done = run_cli(
        [
            "-m",
            "+experiment=digits_asha",
            f"hydra.sweep.dir={tmp_path / 's'}",
            *SLURM,
            "searcher.max_trials=4",
            "searcher.divisor=2",
            "searcher.max_length=2 epochs",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(tmp_path / "s")
    assert len(table) == 4 and "COMPLETED" in {r["status"] for r in table}
    assert "promoting trial" in done.stdout
    promoted = [r for r in table if r["rung"] != "0"]
    for row in promoted:  # continued from its checkpoint: one validation per epoch boundary
        batches = [
            m["batches"] for m in read_metrics(Path(row["dir"])) if m["kind"] == "validation"
        ]
        assert batches == sorted(set(batches))
