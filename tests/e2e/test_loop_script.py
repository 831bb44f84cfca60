"""A training script with its own loop (``trials/quadratic_loop.py``), run as a user runs it:
exact lengths and periods, SIGKILL and resume, ASHA's promotions, Slurm's pre-emption."""

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

import pytest

from tests.slurm_support import _slurm_must_run_in_ci, needs_slurm
from tests.support import REPO, read_metrics, read_result, run_script, script_command, validations

_ = _slurm_must_run_in_ci
SLURM = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def loop_command(*args: str) -> list[str]:
    """``python -m trials.quadratic_loop [-m] +experiment=quadratic ARGS``."""
    return script_command("trials.quadratic_loop", "quadratic", *args)


def loop_script(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """:func:`loop_command` run from ``cwd``."""
    return run_script(loop_command(*args), cwd=cwd, env=_env(), timeout=timeout)


def test_the_loop_script_trains_exactly_ten_batches_validating_at_4_8_10(tmp_path: Path) -> None:
    done = loop_script(
        tmp_path,
        "searcher.max_length=10 batches",
        "min_validation_period=4 batches",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [b for b, _, _ in validations(tmp_path / "run")] == [4, 8, 10]
    result = read_result(tmp_path / "run")
    assert (result["status"], result["batches"], result["records"]) == ("completed", 10, 80)
    last = done.stdout.strip().splitlines()[-1]
    assert last.endswith(
        f"completed 10 batches: validation_loss {_short(result['metric'])} "
        f"(best {_short(result['best_metric'])}); run directory {(tmp_path / 'run').resolve()}"
    )
    assert "validated in " in done.stdout and "at epoch 1, batch 8/32" in done.stdout


def _short(value: float) -> str:
    return f"{value:.4g}"


SLOW = [
    "searcher.max_length=2 epochs",  # 64 batches, 32 an epoch
    "min_checkpoint_period=5 batches",
    "min_validation_period=8 batches",
    "seed=4",
]


def test_sigkill_after_a_checkpoint_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    straight = loop_script(tmp_path, *SLOW, f"hydra.run.dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stdout + straight.stderr
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        loop_command(
            *SLOW, "+hyperparameters.seconds_per_batch=0.03", f"hydra.run.dir={killed_dir}"
        ),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = killed_dir / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        latest.exists() and int(json.loads(latest.read_text())["name"]) >= 10
    ):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    at_kill = int(json.loads(latest.read_text())["name"])
    assert 10 <= at_kill < 64  # killed inside the run, past a checkpoint inside an epoch
    resumed = loop_script(
        tmp_path, *SLOW, "resume=true", f"hydra.run.dir={killed_dir}"
    )  # no sleeping: the same batches whatever the speed
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {killed_dir / 'checkpoints' / f'{at_kill:010d}'}: {at_kill} batches" in (
        resumed.stdout
    )
    assert validations(killed_dir) == validations(tmp_path / "straight")
    got, want = read_result(killed_dir), read_result(tmp_path / "straight")
    fields = ("records", "batches", "steps", "epochs", "metric", "best_metric", "validation")
    assert {k: got[k] for k in fields} == {k: want[k] for k in fields}


ASHA = [
    "-m",
    "searcher.name=asha",
    "searcher.max_trials=4",
    "searcher.divisor=2",
    "searcher.max_rungs=2",
    "searcher.max_length=4 epochs",
    "searcher.max_concurrent_trials=2",
    "hyperparameters.lr=tag(log, interval(0.01, 0.2))",
]


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "results.csv") as handle:
        return list(csv.DictReader(handle))


def test_the_loop_script_under_asha_continues_promotions_from_their_checkpoints(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "s"
    done = loop_script(tmp_path, *ASHA, f"hydra.sweep.dir={sweep_dir}")
    assert done.returncode == 0, done.stdout + done.stderr
    table = _rows(sweep_dir)
    promoted = [row for row in table if row["rung"] == "1"]
    assert len(table) == 4 and promoted and "promoting trial" in done.stdout
    for row in table:
        run_dir = Path(row["dir"])
        result = read_result(run_dir)
        batches = [r["batches"] for r in read_metrics(run_dir)]
        assert batches == sorted(batches)  # one pass: nothing trained twice
        rung_end = 128 if row["rung"] == "1" else 64  # 2 and 4 epochs of 32 batches
        assert (result["batches"], result["epochs"], int(row["batches"])) == (
            rung_end,
            rung_end // 32,
            rung_end,
        )
        log = (run_dir / "output.log").read_text()
        assert log.count("resumed from") == (1 if row["rung"] == "1" else 0)
        if row["rung"] == "1":
            assert f"resumed from {run_dir / 'checkpoints' / f'{64:010d}'}: 64 batches" in log


@needs_slurm
def test_the_loop_script_on_slurm_is_preempted_and_resumes_exactly(tmp_path: Path) -> None:
    args = [
        "searcher.max_length=96 batches",
        "min_checkpoint_period=1 epochs",
        "min_validation_period=16 batches",
        "seed=11",
    ]
    reference = loop_script(tmp_path, *args, f"hydra.run.dir={tmp_path / 'ref'}")
    assert reference.returncode == 0, reference.stdout + reference.stderr
    sweep_dir = tmp_path / "s"
    log = tmp_path / "driver.log"
    with open(log, "w") as handle:
        driver = subprocess.Popen(
            loop_command(
                "-m",
                *args,
                *SLURM,
                "+hyperparameters.seconds_per_batch=0.06",
                f"hydra.sweep.dir={sweep_dir}",
            ),
            cwd=tmp_path,
            env=_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 240
    job = None
    while time.monotonic() < deadline and job is None:
        match = re.search(r"trial 0: Slurm job (\S+),", log.read_text())
        job = match.group(1).rstrip(",") if match else None
        time.sleep(0.1)
    assert job is not None, log.read_text()
    trial = sweep_dir / "0"
    while time.monotonic() < deadline and _trained(trial) < 40:
        time.sleep(0.05)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    assert driver.wait(timeout=max(1, deadline - time.monotonic())) == 0, log.read_text()
    train_log = (trial / "quadratic_loop.log").read_text()
    assert train_log.count("stopped at batch") == 1 and train_log.count("resumed from") == 1
    stopped_at = int(re.findall(r"stopped at batch (\d+)", train_log)[0])
    assert 40 <= stopped_at < 96
    assert validations(trial) == validations(tmp_path / "ref")
    got, want = read_result(trial), read_result(tmp_path / "ref")
    fields = ("status", "records", "batches", "steps", "metric", "validation")
    assert {k: got[k] for k in fields} == {k: want[k] for k in fields}


def _trained(run_dir: Path) -> int:
    try:
        return max((r["batches"] for r in read_metrics(run_dir)), default=0)
    except (OSError, ValueError):
        return 0


@pytest.fixture(scope="module")
def torch_loop_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's own loop over torch on several slots: DistributedSampler, DDP, the run's
    collective from ``detflow.pytorch.init_distributed``."""
    pytest.importorskip("torch")
    script = tmp_path_factory.mktemp("torch") / "torch_loop.py"
    script.write_text(TORCH_LOOP.replace("REPO", repr(str(REPO))))
    return script


TORCH_LOOP = """
import conf
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import detflow
from detflow.pytorch import init_distributed

conf.register()


@detflow.main(config_path=REPO + "/conf", config_name="config")
def main(cfg):
    run = detflow.init(cfg)
    device = init_distributed(run)
    torch.manual_seed(0)
    inputs = torch.randn(160, 4)
    data = TensorDataset(inputs, (inputs.sum(dim=1) > 0).long())
    model = torch.nn.Linear(4, 2).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=run.hparams["lr"])
    state = run.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    net = DistributedDataParallel(model) if run.world_size > 1 else model

    def epoch(number):
        sampler = DistributedSampler(data, run.world_size, run.rank, shuffle=True, seed=run.seed)
        sampler.set_epoch(number)
        return DataLoader(data, batch_size=run.per_slot_batch_size, sampler=sampler)

    for x, y in run.batches(epoch):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.report_training({"loss": loss.item()})
        if run.should_validate:
            with torch.no_grad():
                shard = inputs[run.rank :: run.world_size]
                labels = (shard.sum(dim=1) > 0).long()
                val = torch.nn.functional.cross_entropy(model(shard), labels, reduction="sum")
            run.report_validation({"loss": val.item() / len(shard)}, records=len(shard))
        if run.should_checkpoint:
            run.checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    return run.finish().validation["validation_loss"]


if __name__ == "__main__":
    main()
"""


def test_the_users_loop_on_two_slots_counts_and_averages_over_both(
    tmp_path: Path, torch_loop_script: Path
) -> None:
    runs = {}
    for slots in (1, 2):
        sweep_dir = tmp_path / f"slots{slots}"
        done = subprocess.run(
            [
                sys.executable,
                str(torch_loop_script),
                "-m",
                "+experiment=quadratic",
                "hyperparameters.global_batch_size=16",
                "searcher.max_length=3 epochs",
                f"resources.slots_per_trial={slots}",
                f"hydra.sweep.dir={sweep_dir}",
            ],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        runs[slots] = sweep_dir / "0"
    one, two = (validations(runs[n]) for n in (1, 2))
    assert (
        [(b, r) for b, r, _ in two]
        == [(b, r) for b, r, _ in one]
        == [
            (10, 160),
            (20, 320),
            (30, 480),
        ]
    )
    for (_, _, a), (_, _, b) in zip(two, one, strict=True):
        assert abs(a["validation_loss"] - b["validation_loss"]) <= 1e-5
    assert len(list((tmp_path / "slots2").rglob("metrics.jsonl"))) == 1  # rank 0 writes
    window = next(r for r in read_metrics(runs[2]) if r["kind"] == "validation")["window"]
    assert window["records"] == 160  # both halves of the validation set, counted once
