"""A LightningModule's training script under detflow (``tests/lightning_support.py``), run as
a user runs it: exactly 30 batches validating at 10, 20 and 30, then SIGKILL and an exact
resume; ASHA's early stops and promotions from checkpoints; two slots (DDP, gloo) on CPU."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

from tests.lightning_support import script_env
from tests.support import read_metrics, read_result, run_script, script_command, validations


def lightning_command(*args: str) -> list[str]:
    """``python -m tests.lightning_support [-m] +experiment=tiny_lightning ARGS``."""
    return script_command("tests.lightning_support", "tiny_lightning", *args)


def lightning_script(
    cwd: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """:func:`lightning_command` run from ``cwd``."""
    return run_script(lightning_command(*args), cwd=cwd, env=script_env(), timeout=timeout)


def test_under_asha_some_trials_stop_early_and_promotions_continue_from_checkpoints(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "s"
    done = lightning_script(
        tmp_path,
        "-m",
        "searcher.name=asha",
        "searcher.max_trials=4",
        "searcher.divisor=2",
        "searcher.max_rungs=2",
        "searcher.max_concurrent_trials=2",
        "hyperparameters.lr=tag(log, interval(0.01, 0.2))",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with open(sweep_dir / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4
    assert {row["status"] for row in table} == {"COMPLETED", "STOPPED_EARLY"}
    promoted = [row for row in table if row["rung"] == "1"]
    assert promoted and "promoting trial" in done.stdout
    for row in table:
        run_dir = Path(row["dir"])
        end = 30 if row["rung"] == "1" else 15  # the rungs: 15 and 30 batches
        assert (read_result(run_dir)["batches"], int(row["batches"])) == (end, end)
        batches = [r["batches"] for r in read_metrics(run_dir)]
        assert batches == sorted(batches)  # one pass: nothing trained twice
        assert [b for b, _, _ in validations(run_dir)] == (
            [10, 15, 20, 30] if end == 30 else [10, 15]
        )
        log = (run_dir / "output.log").read_text()
        if row["rung"] == "1":
            assert f"resumed from {run_dir / 'checkpoints' / f'{15:010d}'}: 15 batches" in log
        else:
            assert "resumed from" not in log


SLOW = ["seed=7", "min_checkpoint_period=4 batches"]


def test_sigkill_then_resume_gives_the_metrics_of_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = lightning_script(tmp_path, *SLOW, f"hydra.run.dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stdout + straight.stderr
    straights = validations(tmp_path / "straight")  # 30 batches, its val_loss at 10, 20, 30
    assert [(b, r) for b, r, _ in straights] == [(10, 40), (20, 80), (30, 120)]
    assert all(set(m) == {"val_loss"} for _, _, m in straights)
    assert "completed 30 batches: val_loss " in straight.stdout
    killed_dir = tmp_path / "killed"
    command = lightning_command(
        *SLOW, "hyperparameters.seconds_per_batch=0.1", f"hydra.run.dir={killed_dir}"
    )
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=script_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = killed_dir / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        latest.exists() and int(json.loads(latest.read_text())["name"]) >= 12
    ):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    at_kill = int(json.loads(latest.read_text())["name"])
    assert 12 <= at_kill < 30 and at_kill % 4 == 0  # past a validation, inside an epoch
    resumed = lightning_script(tmp_path, *SLOW, "resume=true", f"hydra.run.dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {killed_dir / 'checkpoints' / f'{at_kill:010d}'}" in resumed.stdout
    assert read_metrics(killed_dir)[-1]["batches"] == 30
    strip = [
        {k: r[k] for k in ("kind", "batches", "records", "metrics")}
        for r in read_metrics(killed_dir)
    ]
    want = [
        {k: r[k] for k in ("kind", "batches", "records", "metrics")}
        for r in read_metrics(tmp_path / "straight")
    ]
    assert strip == want  # every report, training and validation, equal
    fields = ("records", "batches", "steps", "epochs", "metric", "best_metric", "validation")
    got, expected = read_result(killed_dir), read_result(tmp_path / "straight")
    assert {k: got[k] for k in fields} == {k: expected[k] for k in fields}


def test_two_slots_train_with_lightnings_ddp_over_gloo(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    done = lightning_script(
        tmp_path, "-m", "resources.slots_per_trial=2", f"hydra.sweep.dir={sweep_dir}"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = sweep_dir / "0"
    rank1 = (run_dir / "output.rank1.log").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in rank1
    two_slots = validations(run_dir)
    # 2 records a slot, 4 a global batch: the same 10 batches an epoch as on one slot
    assert [(b, r) for b, r, _ in two_slots] == [(10, 40), (20, 80), (30, 120)]
    assert read_result(run_dir)["epochs"] == 3
    assert len(list(run_dir.rglob("metrics.jsonl"))) == 1  # one writer
