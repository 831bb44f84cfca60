"""Determined's ways end to end through ``python train.py``: adaptive_asha with Determined's
defaults, its hyperparameter syntax in YAML and on the command line, its older names."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

from detflow._results.cli import main as detflow_cli
from tests.support import read_metrics, run_cli

#: Determined's adaptive_asha defaults: 16 trials, 5 rungs, divisor 4, mode standard.
DETERMINED_DEFAULTS = [
    "searcher.name=adaptive_asha",
    "searcher.max_trials=16",
    "searcher.max_rungs=5",
    "searcher.divisor=4",
    "searcher.mode=standard",
]


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["-m", "+experiment=quadratic", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args],
        cwd=tmp_path,
    )


def rows(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "sweep" / "results.csv") as handle:
        return list(csv.DictReader(handle))


def hparams(trial_dir: Path) -> dict[str, dict[str, object]]:
    loaded: dict[str, dict[str, object]] = json.loads((trial_dir / "hparams.json").read_text())
    return loaded


def test_adaptive_asha_with_determineds_defaults_completes_some_and_stops_most(
    tmp_path: Path,
) -> None:
    done = sweep(
        tmp_path,
        *DETERMINED_DEFAULTS,
        "searcher.max_length=128 batches",  # 4 epochs of the quadratic's 256 records
        "searcher.max_concurrent_trials=2",
        "hyperparameters.lr=tag(log, interval(0.003, 0.3))",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # 16 trials cap max_rungs at 1 + log4(16) = 3; standard: brackets of 3 and 2 rungs
    assert (
        "adaptive_asha search: 16 trials planned, up to 2 at once, max_length 128 batches, "
        "2 brackets: 12 trials (1 at once) at 8, 32, 128 batches; "
        "4 trials (1 at once) at 32, 128 batches, "
        "new trials proposed by a density model (searcher.sampler=tpe), in " in done.stdout
    )
    table = rows(tmp_path)
    assert len(table) == 16
    statuses = [r["status"] for r in table]
    completed = [r for r in table if r["status"] == "COMPLETED"]
    assert len(completed) >= 1
    assert all(r["batches"] == "128" for r in completed)  # at full length
    assert statuses.count("STOPPED_EARLY") > len(table) / 2  # most stop early
    assert "FAILED" not in statuses
    assert {r["length_batches"] for r in table} <= {"8", "32", "128"}
    # a completed trial was promoted from its checkpoint, rung by rung of its bracket: one
    # validation per epoch and at each rung's end, never repeated
    state = json.loads((tmp_path / "sweep" / "searcher.json").read_text())["searcher"]
    assert state["settings"]["brackets"] == [[3, 12, 1], [2, 4, 1]]
    assert len(state["brackets"]) == 16
    assert state["brackets"].count(0) == 12
    for row in completed:
        validations = [
            m["batches"]
            for m in read_metrics(tmp_path / "sweep" / row["trial_id"])
            if m["kind"] == "validation"
        ]
        first = [8] if state["brackets"][int(row["trial_id"])] == 0 else []
        assert validations == [*first, 32, 64, 96, 128]
    total = sum(int(r["batches"]) for r in table)
    assert total <= 16 * 128 / 2  # at most half of 16 full-length trials
    assert detflow_cli(["summary", str(tmp_path / "sweep")]) == 0


def test_asha_warns_when_no_trial_can_reach_max_length(tmp_path: Path) -> None:
    done = sweep(
        tmp_path,
        "searcher.name=async_halving",  # Determined's older name of asha
        "searcher.max_trials=16",
        "searcher.max_rungs=3",
        "searcher.divisor=4",
        "searcher.max_length=32 batches",
        "searcher.max_concurrent_trials=4",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "searcher.name async_halving is Determined's older name: running asha" in done.stdout
    assert "asha search: 16 trials planned" in done.stdout
    assert "rungs at 2, 8, 32 batches" in done.stdout
    assert "16 trials, divisor 4: rung 2 needs 16" not in done.stdout  # 16 suffice
    done = sweep(
        tmp_path,
        "searcher.name=asha",
        "searcher.max_trials=4",
        "searcher.max_rungs=3",
        "searcher.divisor=4",
        "searcher.max_length=32 batches",
        "hydra.sweep.dir=" + str(tmp_path / "other"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 trials, divisor 4: rung 2 needs 16; nothing will train to max_length" in (
        done.stdout + done.stderr
    )


def test_determined_syntax_in_yaml_samples_within_its_bounds(tmp_path: Path) -> None:
    done = run_cli(
        [
            "-m",
            "+experiment=quadratic_determined",  # conf/experiment/quadratic_determined.yaml
            "searcher.name=random",
            "searcher.max_trials=8",
            "searcher.max_concurrent_trials=2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(tmp_path)
    assert [r["status"] for r in table] == ["COMPLETED"] * 8
    seen_noise = set()
    for row in table:
        recorded = hparams(tmp_path / "sweep" / row["trial_id"])
        lr = recorded["hyperparameters.lr"]["value"]
        assert isinstance(lr, float) and 1e-3 <= lr <= 1e-1  # log: bounds are exponents
        dims = recorded["hyperparameters.dims"]["value"]
        assert type(dims) is int and 2 <= dims <= 6  # ints as ints
        noise = recorded["hyperparameters.noise"]["value"]
        assert noise in (0.5, 1.0, 2.0)  # categoricals from vals
        seen_noise.add(noise)
        scale = recorded["hyperparameters.shape.scale"]["value"]
        assert isinstance(scale, float) and 0.25 <= scale <= 0.75  # nested
        for key in ("lr", "dims", "noise", "shape.scale"):
            assert recorded[f"hyperparameters.{key}"]["source"] == "searcher"
        assert recorded["hyperparameters.tag"] == {"value": "determined", "source": "config"}
    exponents = sorted(math.log10(float(r["hyperparameters.lr"])) for r in table)
    assert exponents[0] < -2 < exponents[-1]  # spread over the exponents, not near 1e-1
    assert len(seen_noise) > 1
    assert {k for k in table[0] if k.startswith("hyperparameters.")} == {
        "hyperparameters.dims",
        "hyperparameters.lr",
        "hyperparameters.noise",
        "hyperparameters.shape.scale",
    }


def test_determined_syntax_on_the_command_line_and_grid_counts(tmp_path: Path) -> None:
    done = sweep(
        tmp_path,
        "searcher.name=grid",
        "searcher.max_length=8 batches",
        "hyperparameters.lr={type:log,minval:-3,maxval:-1,count:3}",
        "+hyperparameters.dims={type:int,minval:2,maxval:6,count:2}",
        "+hyperparameters.layout={type:categorical,vals:[[1,2],{a:1}]}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(tmp_path)
    points = set()
    for row in table:
        recorded = hparams(tmp_path / "sweep" / row["trial_id"])
        # a list or a mapping reaches the trial whole, not merged into the {type: ...} entry
        assert not any(k.startswith("hyperparameters.layout.type") for k in recorded)
        layout = (
            "list"
            if recorded.get("hyperparameters.layout", {}).get("value") == [1, 2]
            else "mapping"
            if recorded.get("hyperparameters.layout.a", {}).get("value") == 1
            else None
        )
        dims = recorded["hyperparameters.dims"]["value"]
        lr = recorded["hyperparameters.lr"]["value"]
        assert isinstance(lr, float)
        exponent = round(math.log10(lr), 9)
        points.add((layout, dims, exponent))
    assert len(table) == 12
    assert points == {
        (layout, d, e) for layout in ("list", "mapping") for d in (2, 6) for e in (-3, -2, -1)
    }


def test_a_single_run_takes_the_midpoint_and_says_so(tmp_path: Path) -> None:
    done = run_cli(
        ["+experiment=quadratic_determined", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "hyperparameters.lr is a search dimension {type: log, minval: -3, maxval: -1, base: 10}"
        ": this single run uses its midpoint 0.01" in done.stdout + done.stderr
    )
    recorded = hparams(tmp_path / "run")
    assert recorded["hyperparameters.lr"] == {"value": 0.01, "source": "config"}
    assert recorded["hyperparameters.dims"]["value"] == 4
    assert recorded["hyperparameters.noise"]["value"] == 0.5
    assert recorded["hyperparameters.tag"]["value"] == "determined"


def test_a_bad_determined_entry_is_refused_before_anything_runs(tmp_path: Path) -> None:
    done = sweep(
        tmp_path,
        "searcher.name=random",
        "searcher.max_trials=2",
        "hyperparameters.lr={type:log,minval:-1}",
    )
    assert done.returncode == 2
    assert "hyperparameters.lr = {type: log, minval: -1} is not valid: expected Determined's" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "sweep" / "0").exists()
