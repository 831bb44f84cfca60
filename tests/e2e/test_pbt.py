"""``searcher.name=pbt`` end to end: ``python train.py -m`` on the quadratic example, the
lineage in ``results.csv`` and ``detflow plot``, and a driver SIGKILLed mid-search resuming
with nothing rerun."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from detflow._results.cli import main as detflow
from detflow._results.plot import LINEAGE, figure
from detflow._results.reader import load
from tests.support import kill_and_resume, read_metrics, run_cli, told

#: 4 members, generations of one epoch (32 batches of 8 of the quadratic's 256 records).
PBT = [
    "searcher.name=pbt",
    "searcher.population_size=4",
    "searcher.perturb_every=1 epochs",
    "hyperparameters.lr=tag(log, interval(0.001, 0.3))",
]
BATCHES = 32  # per epoch, per generation


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["-m", "+experiment=quadratic", f"hydra.sweep.dir={tmp_path / 'sweep'}", *PBT, *args],
        cwd=tmp_path,
    )


def rows(tmp_path: Path) -> dict[int, dict[str, str]]:
    with open(tmp_path / "sweep" / "results.csv") as handle:
        return {int(r["trial_id"]): r for r in csv.DictReader(handle)}


def validations(trial_dir: Path) -> list[int]:
    return [m["batches"] for m in read_metrics(trial_dir) if m["kind"] == "validation"]


def test_pbt_replaces_the_bottom_with_children_of_the_top_and_plots_the_lineage(
    tmp_path: Path,
) -> None:
    done = sweep(tmp_path, "searcher.max_length=3 epochs", "searcher.max_concurrent_trials=4")
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(tmp_path)
    # One member replaced at each of the two generation boundaries (4 x 0.25).
    assert sorted(table) == [0, 1, 2, 3, 4, 5]
    assert [table[t]["parent"] for t in range(4)] == ["", "", "", ""]
    statuses = [table[t]["status"] for t in sorted(table)]
    assert statuses.count("COMPLETED") == 4 and statuses.count("STOPPED_EARLY") == 2
    # Each generation trains every member one epoch: 4 x 3 x 32 batches, nothing twice.
    assert f"{4 * 3 * BATCHES} batches trained in all" in done.stdout
    for child in (4, 5):
        row, parent = table[child], int(table[child]["parent"])
        start = (child - 3) * BATCHES  # the boundary it was made at
        assert f"trial {child} starts from trial {parent}'s checkpoint at batch {start}" in (
            done.stdout
        )
        # The parent was among the best at that boundary: it validated there no worse than
        # the member the child replaced.
        replaced = next(
            t
            for t in table
            if table[t]["status"] == "STOPPED_EARLY" and int(table[t]["rung"]) == child - 4
        )
        at = {t: _validation_at(tmp_path / "sweep" / str(t), start) for t in (parent, replaced)}
        assert at[parent] <= at[replaced]
        # Its own directory: it continued the parent's training from the boundary on.
        assert json.loads((tmp_path / "sweep" / str(child) / "parent.json").read_text()) == {
            "parent": parent,
            "batches": start,
        }
        assert validations(tmp_path / "sweep" / str(child)) == list(
            range(start + BATCHES, 3 * BATCHES + 1, BATCHES)
        )
        lr, parents_lr = (
            float(row["hyperparameters.lr"]),
            float(table[parent]["hyperparameters.lr"]),
        )
        assert min(abs(lr - parents_lr * f) for f in (0.8, 1.2)) < 1e-12 * parents_lr
        chosen = json.loads((tmp_path / "sweep" / str(child) / "hparams.json").read_text())
        assert chosen["hyperparameters.lr"]["value"] == lr
    for member in (t for t in range(4) if table[t]["status"] == "COMPLETED"):
        assert validations(tmp_path / "sweep" / str(member)) == [32, 64, 96]  # continued

    # detflow summary and plot read it; the plot draws each child's link to its parent.
    assert detflow(["summary", str(tmp_path / "sweep")]) == 0
    png = tmp_path / "curves.png"
    assert detflow(["plot", str(tmp_path / "sweep"), "-o", str(png)]) == 0
    assert png.stat().st_size > 10_000
    fig = figure(load(tmp_path / "sweep"))
    links = [line for line in fig.axes[0].get_lines() if line.get_label() == LINEAGE]
    assert len(links) == 2
    for link, child in zip(links, (4, 5), strict=True):
        xs = np.asarray(link.get_xdata(), dtype=float).tolist()
        assert xs == [(child - 3) * BATCHES, (child - 2) * BATCHES]


def _validation_at(trial_dir: Path, batches: int) -> float:
    (value,) = [
        m["metrics"]["validation_loss"]
        for m in read_metrics(trial_dir)
        if m["kind"] == "validation" and m["batches"] == batches
    ]
    return float(value)


def test_a_killed_pbt_driver_resumes_with_nothing_rerun(tmp_path: Path) -> None:
    args = ["searcher.max_length=2 epochs", "searcher.max_concurrent_trials=2"]
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference = sweep(reference_dir, *args)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    expected = {t: _comparable(r) for t, r in rows(reference_dir).items()}

    state = tmp_path / "sweep" / "searcher.json"
    sweep_args = [
        "-m", "+experiment=quadratic", f"hydra.sweep.dir={tmp_path / 'sweep'}", *PBT, *args
    ]  # fmt: skip
    # Killed once generation 0 has a result, then once the child has been told.
    killed = kill_and_resume(sweep_args, cwd=tmp_path, state=state, kills=(1, 5))
    final, killed_at, outputs = killed.final, killed.killed_at, killed.outputs
    assert final.returncode == 0, final.stdout + final.stderr
    assert len(killed_at) == 2 and killed_at[-1] < told(state), killed_at

    # Nothing lost: the same trials, lineage, lengths and curves as the uninterrupted run.
    assert {t: _comparable(r) for t, r in rows(tmp_path).items()} == expected
    for trial in expected:
        got = read_metrics(tmp_path / "sweep" / str(trial))
        want = read_metrics(reference_dir / "sweep" / str(trial))
        assert _untimed(got) == _untimed(want), trial
    # Nothing run twice: a launch (start or promotion to a length) happens once over all
    # the drivers, unless a kill cut it off and the next driver resumed it.
    launches: list[str] = []
    resumed = 0
    for out in outputs:
        resumed += len(re.findall(r"resuming trial \d+", out))
        launches += re.findall(r"(?:starting|promoting) trial \d+ to \d+ epochs?", out)
    assert set(launches) == set(
        re.findall(r"(?:starting|promoting) trial \d+ to \d+ epochs?", reference.stdout)
    )
    assert len(launches) - len(set(launches)) <= resumed


def _comparable(row: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in row.items() if k != "dir"}


def _untimed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("time", "window")} for r in records]
