"""``searcher.name=bohb`` end to end: ``python train.py -m`` with the dependency-free trial,
locally and on the local Slurm, and a driver SIGKILLed mid-search that resumes with nothing
rerun."""

from __future__ import annotations

import json
import random
from pathlib import Path

from detflow._search.space import Interval, Space, sample
from tests.e2e.test_sweep_cli import (
    _assert_nothing_ran_twice,
    _comparable,
    _without_times,
    rows,
    sweep,
)
from tests.slurm_support import _slurm_must_run_in_ci, needs_slurm
from tests.support import kill_and_resume, read_metrics, told

_ = _slurm_must_run_in_ci
BOHB = [
    "searcher.name=bohb",
    "searcher.max_trials=8",
    "searcher.min_length=1 epochs",  # with divisor 2 and 4 epochs: rungs at 1, 2 and 4 epochs
    "searcher.divisor=2",
    "hyperparameters.lr=tag(log, interval(0.001, 0.3))",
]
RUNG_EPOCHS = {"0": "1", "1": "2", "2": "4"}
SPACE: Space = {"hyperparameters.lr": Interval(0.001, 0.3, log=True)}


def _random_draw(trial_id: int, seed: int = 0) -> float:
    """The lr random search (and asha) gives trial ``trial_id``."""
    value = sample(SPACE, random.Random(f"{seed}:{trial_id}"))["hyperparameters.lr"]
    assert isinstance(value, float)
    return value


def _check_a_finished_bohb_sweep(sweep_root: Path, stdout: str) -> None:
    """What any finished run of :data:`BOHB` shows: promotions continued from checkpoints,
    the state bohb's, and later trials proposed by the model."""
    assert "bohb search: 8 trials planned" in stdout
    table = rows(sweep_root)
    assert len(table) == 8
    statuses = [r["status"] for r in table]
    assert statuses.count("COMPLETED") >= 1 and "STOPPED_EARLY" in statuses
    assert all(r["length_epochs"] == RUNG_EPOCHS[r["rung"]] for r in table)
    promoted = next(r for r in table if r["status"] == "COMPLETED")
    trained = [
        m
        for m in read_metrics(sweep_root / "sweep" / promoted["trial_id"])
        if m["kind"] == "validation"
    ]
    assert [m["batches"] for m in trained] == [32, 64, 96, 128]  # continued, not restarted
    state = json.loads((sweep_root / "sweep" / "searcher.json").read_text())["searcher"]
    assert state["settings"]["searcher"] == "BohbSearcher"
    # While rung 0 is untested, one new trial in divisor (2) starts a rung higher, unselected.
    assert state["start_rungs"][:2] == [0, 1] and set(state["start_rungs"]) <= {0, 1}
    # The model needs 4 results (1 dimension): some later trial's lr is not the random draw.
    lrs = {int(r["trial_id"]): float(r["hyperparameters.lr"]) for r in table}
    assert all(lrs[i] == _random_draw(i) for i in range(4))
    assert any(lrs[i] != _random_draw(i) for i in range(4, 8)), lrs


def test_bohb_runs_and_a_killed_driver_resumes_without_losing_or_rerunning_trials(
    tmp_path: Path,
) -> None:
    args = [*BOHB, "searcher.max_concurrent_trials=1"]
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference = sweep(reference_dir, *args)
    assert reference.returncode == 0, reference.stdout
    _check_a_finished_bohb_sweep(reference_dir, reference.stdout)
    expected = _comparable(rows(reference_dir))
    state = tmp_path / "sweep" / "searcher.json"
    sweep_args = ["-m", "+experiment=quadratic", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args]
    # Three kills, each after the driver recorded a result of its own, then a run to the end.
    killed = kill_and_resume(sweep_args, cwd=tmp_path, state=state, kills=3)
    final, killed_at, outputs = killed.final, killed.killed_at, killed.outputs
    assert final.returncode == 0, final.stdout
    assert len(killed_at) == 3 and killed_at == sorted(set(killed_at)), killed_at
    assert killed_at[-1] < told(reference_dir / "sweep" / "searcher.json") == told(state)

    # Nothing lost: the same rows (the same proposals), the same learning curves.
    assert _comparable(rows(tmp_path)) == expected
    for row in expected:
        got = read_metrics(tmp_path / "sweep" / row["trial_id"])
        want = read_metrics(reference_dir / "sweep" / row["trial_id"])
        assert _without_times(got) == _without_times(want), row["trial_id"]
    # Nothing run twice: a launch is never repeated unless a kill cut it off before its rung's
    # length (then it is logged as resumed), and a reached rung is never resumed.
    _assert_nothing_ran_twice(outputs, reference.stdout, len(killed_at), RUNG_EPOCHS)


SLURM = [
    "hydra/launcher=detflow_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.time=10",
    "hydra.launcher.gpus_per_node=0",
]


@needs_slurm
def test_bohb_runs_on_slurm(tmp_path: Path) -> None:
    done = sweep(
        tmp_path,
        "searcher.name=bohb",
        "searcher.max_trials=4",
        "searcher.divisor=2",
        "searcher.max_rungs=2",
        "searcher.max_concurrent_trials=2",
        "hyperparameters.lr=tag(log, interval(0.001, 0.3))",
        *SLURM,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(tmp_path)
    assert len(table) == 4 and {r["rung"] for r in table} == {"0", "1"}
    assert "Slurm job" in done.stdout and "promoting trial" in done.stdout
    assert [r["status"] for r in table].count("COMPLETED") >= 1
