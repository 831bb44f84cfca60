"""``python train.py -m``: detflow's sweeper end to end, with the dependency-free trial."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import kill_and_resume, read_metrics, run_cli, told


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["-m", "+experiment=quadratic", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args],
        cwd=tmp_path,
    )


def rows(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "sweep" / "results.csv") as handle:
        return list(csv.DictReader(handle))


GRID = [
    "searcher.name=grid",
    "hyperparameters.lr=choice(0.02,0.05)",
    "hyperparameters.global_batch_size=choice(8,16)",
]


def test_grid_runs_every_point_once_and_writes_a_row_each(tmp_path: Path) -> None:
    done = sweep(tmp_path, *GRID)
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(tmp_path)
    assert [(r["hyperparameters.global_batch_size"], r["hyperparameters.lr"]) for r in table] == [
        ("8", "0.02"),
        ("8", "0.05"),
        ("16", "0.02"),
        ("16", "0.05"),
    ]
    assert {r["status"] for r in table} == {"COMPLETED"}
    assert [r["batches"] for r in table] == ["128", "128", "64", "64"]  # 4 epochs of 256 records
    hparams = json.loads((tmp_path / "sweep" / "3" / "hparams.json").read_text())
    assert hparams["hyperparameters.lr"] == {"value": 0.05, "source": "searcher"}
    assert hparams["hyperparameters.global_batch_size"] == {"value": 16, "source": "searcher"}
    assert "4 trials: 4 completed, 0 stopped early, 0 failed" in done.stdout


def test_grid_rejects_a_continuous_dimension(tmp_path: Path) -> None:
    done = sweep(tmp_path, "searcher.name=grid", "hyperparameters.lr=interval(0.01,0.1)")
    assert done.returncode != 0
    assert "hyperparameters.lr" in done.stderr and "choice(...)" in done.stderr
    assert not (tmp_path / "sweep" / "0").exists()


def test_an_invalid_point_is_refused_before_anything_launches(tmp_path: Path) -> None:
    done = sweep(tmp_path, "searcher.name=grid", "hyperparameters.global_batch_size=choice(8,0)")
    assert done.returncode != 0
    assert "hyperparameters.global_batch_size = 0 is not valid" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "sweep" / "0").exists()


def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    done = sweep(tmp_path, "searcher.name=grid", "+hyperparameters.fail_at_batch=choice(0,3,0)")
    assert done.returncode == 1
    table = rows(tmp_path)
    assert [r["status"] for r in table] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert table[1]["error"] == "TrialError: loss is nan at batch 3"
    log = (tmp_path / "sweep" / "1" / "output.log").read_text()
    assert "Traceback" in log and "loss is nan at batch 3" in log
    assert "3 trials: 2 completed, 0 stopped early, 1 failed" in done.stdout
    assert "1 of 3 trials failed" in done.stderr
    assert str(tmp_path / "sweep" / "1" / "output.log") in done.stdout


ASHA = [
    "searcher.name=asha",
    "searcher.max_trials=8",
    "searcher.max_rungs=3",
    "searcher.divisor=2",
    "hyperparameters.lr=tag(log, interval(0.001, 0.3))",
]


def test_asha_promotes_from_checkpoints_and_trains_less_than_random(tmp_path: Path) -> None:
    done = sweep(tmp_path, *ASHA, "searcher.max_concurrent_trials=2")
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(tmp_path)
    assert len(table) == 8
    statuses = [r["status"] for r in table]
    assert statuses.count("COMPLETED") >= 1 and "STOPPED_EARLY" in statuses
    rung_epochs = {"0": "1", "1": "2", "2": "4"}  # 4 epochs / 2**(2 - rung)
    assert all(r["length_epochs"] == rung_epochs[r["rung"]] for r in table)
    total = sum(int(r["batches"]) for r in table)
    # Rung 0: 8 x 32 batches; at most 4 promoted (+32 each), at most 2 to the top (+64 each).
    assert total <= 512 == 8 * 128 // 2  # half of 8 full-length trials, at most
    promoted = next(r for r in table if r["status"] == "COMPLETED")
    trained = [
        m
        for m in read_metrics(tmp_path / "sweep" / promoted["trial_id"])
        if m["kind"] == "validation"
    ]
    # One validation per epoch boundary, never repeated: the promotion continued, not restarted.
    assert [m["batches"] for m in trained] == [32, 64, 96, 128]


def test_any_hydra_launcher_works_in_waves(tmp_path: Path) -> None:
    done = sweep(
        tmp_path,
        "hydra/launcher=basic",
        "searcher.name=grid",
        "hyperparameters.lr=choice(0.02,0.05)",
        "searcher.max_concurrent_trials=2",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["status"] for r in rows(tmp_path)] == ["COMPLETED", "COMPLETED"]


def _comparable(table: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "dir"} for row in table]


def test_a_killed_driver_resumes_without_losing_or_rerunning_trials(tmp_path: Path) -> None:
    args = [*ASHA, "searcher.max_concurrent_trials=1"]
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference = sweep(reference_dir, *args)
    assert reference.returncode == 0, reference.stdout
    expected = _comparable(rows(reference_dir))
    state = tmp_path / "sweep" / "searcher.json"
    sweep_args = ["-m", "+experiment=quadratic", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args]
    # Five kills, each after the driver recorded a result of its own, then a run to the end.
    killed = kill_and_resume(sweep_args, cwd=tmp_path, state=state, kills=5)
    final, killed_at, outputs = killed.final, killed.killed_at, killed.outputs
    assert final.returncode == 0, final.stdout
    # Five distinct points of the search, none at its end (the last driver finished it).
    assert len(killed_at) == 5 and killed_at == sorted(set(killed_at)), killed_at
    assert killed_at[-1] < told(reference_dir / "sweep" / "searcher.json") == told(state)

    # Nothing lost: the same rows, the same learning curve in every trial's directory.
    assert _comparable(rows(tmp_path)) == expected
    for row in expected:
        trial = row["trial_id"]
        got = read_metrics(tmp_path / "sweep" / trial)
        want = read_metrics(reference_dir / "sweep" / trial)
        assert _without_times(got) == _without_times(want), trial
    launches = [line for trial, line in _launches(reference.stdout) if trial]
    assert sorted(launches) == sorted(set(launches))
    _assert_nothing_ran_twice(outputs, reference.stdout, len(killed_at))


RUNG_EPOCHS = {"0": "1", "1": "2", "2": "4"}  # ASHA above: 4 epochs / 2**(2 - rung)


def _assert_nothing_ran_twice(
    outputs: list[str], reference: str, kills: int, rung_epochs: dict[str, str] = RUNG_EPOCHS
) -> None:
    """Over all the drivers' ``outputs``, every start or promotion of the ``reference`` run
    ran once, or was resumed (logged, then launched again) because one of the ``kills`` cut it
    off before it reached its rung's length; none was resumed once reached."""
    reached: set[tuple[str, str]] = set()
    launched: list[str] = []
    relaunched: list[str] = []
    resumed = 0
    for out in outputs:
        resuming: set[str] = set()
        for trial, line in _launches(out):
            done = re.search(r"trial (\d+) reached \d+ batch(?:es)? \((\S+) epochs?\)", line)
            again = re.search(r"resuming trial (\d+) \(rung (\d+)\)", line)
            if done:
                reached.add((done.group(1), done.group(2)))
            elif again:
                resumed += 1
                resuming.add(again.group(1))
                assert (again.group(1), rung_epochs[again.group(2)]) not in reached, line
            elif trial in resuming:
                resuming.remove(trial)  # the resumed trial's launch
                relaunched.append(line)
            elif trial:
                launched.append(line)
    assert sorted(launched) == sorted(set(launched))
    want = {line for trial, line in _launches(reference) if trial}
    assert set(launched) | set(relaunched) == want
    assert len(relaunched) == resumed <= kills


def _launches(output: str) -> list[tuple[str, str]]:
    """The sweep's lines that launch, resume or end a trial, untimed: (trial id or "", line)."""
    found = []
    for line in output.splitlines():
        match = re.search(
            r"\] ((?:(starting|promoting) trial (\d+) to \S+ \S+)|resuming trial .*"
            r"|trial \d+ reached .*)",
            line,
        )
        if match:
            found.append((match.group(3) or "", match.group(1)))
    return found


def _without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("time", "window")} for r in records]


GPU_APP = """
import json, os, time
import hydra

@hydra.main(version_base="1.3", config_path=None, config_name=None)
def job(cfg):
    start = time.time()
    time.sleep(0.3)
    with open(os.path.join({out!r}, f"{{cfg.n}}.json"), "w") as f:
        json.dump({{"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
                   "end": time.time()}}, f)
    return cfg.n

if __name__ == "__main__":
    job()
"""


def test_local_launcher_gives_each_job_its_own_gpus(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(GPU_APP.format(out=str(tmp_path)))
    done = subprocess.run(
        [
            sys.executable,
            str(app),
            "-m",
            "hydra/launcher=detflow_local",
            "hydra.launcher.max_parallel=2",
            "hydra.launcher.gpus=[3,5]",
            "hydra.launcher.gpus_per_trial=1",
            "+n=0,1,2,3",
            f"hydra.sweep.dir={tmp_path / 's'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = [json.loads((tmp_path / f"{n}.json").read_text()) for n in range(4)]
    assert {j["gpus"] for j in jobs} == {"3", "5"}
    for a in jobs:
        overlapping = [
            b for b in jobs if b is not a and b["start"] < a["end"] and a["start"] < b["end"]
        ]
        assert len(overlapping) <= 1  # at most 2 at once
        assert all(b["gpus"] != a["gpus"] for b in overlapping)  # never the same GPU at once
