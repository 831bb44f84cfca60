"""A config error leaves a run directory exactly as it was, and a run directory has one run.

Every kind of error below runs against a copy of a finished run directory (its files must
stay byte for byte, times too) and against a new one (nothing may be created).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO, run_cli

QUADRATIC = ["+experiment=quadratic", "searcher.max_length=4 batches"]

#: (id, overrides, a phrase of the one error line)
ERRORS = [
    ("bad-batch-size", ["hyperparameters.global_batch_size=abc"], "global_batch_size"),
    ("float-batch-size", ["hyperparameters.global_batch_size=4.5"], "an integer"),
    ("zero-batch-size", ["hyperparameters.global_batch_size=0"], "a positive integer"),
    ("lr-not-a-number", ["hyperparameters.lr=abc"], "a number (what it scales to)"),
    ("bad-length-unit", ["searcher.max_length=7 parsecs"], "searcher.max_length"),
    ("zero-length", ["searcher.max_length=0 batches"], "searcher.max_length"),
    ("bad-period", ["min_validation_period=3 lightyears"], "min_validation_period"),
    ("bad-searcher", ["searcher.name=bayes"], "searcher.name"),
    ("bad-precedence", ["hparams_precedence=both"], "hparams_precedence"),
    ("unknown-searcher-key", ["+searcher.max_trial=5"], "did you mean searcher.max_trials?"),
    ("unknown-resources-key", ["+resources.slot_per_trial=2"], "resources.slots_per_trial"),
    ("determined-key", ["+reproducibility.experiment_seed=42"], "use seed"),
    ("near-miss-top-key", ["+seeds=3"], "did you mean seed?"),
    ("bad-scale-rule", ["hyperparameters.lr=${df.scale:0.05,cubic}"], "a scaling rule"),
    ("aggregation-zero", ["optimizations.aggregation_frequency=0"], "aggregation_frequency"),
    ("slots-not-dividing", ["resources.slots_per_trial=3"], "a multiple of"),
    ("records-per-epoch-zero", ["records_per_epoch=0"], "records_per_epoch"),
    ("random-without-trials", ["searcher.name=random"], "searcher.max_trials"),
    ("negative-divisor", ["searcher.divisor=-1"], "searcher.divisor"),
    ("missing-batch-size", ["~hyperparameters.global_batch_size"], "global_batch_size"),
    ("resume-false-on-a-checkpoint", ["resume=false"], "resume"),
    ("resume-not-a-boolean", ["resume=2"], "resume = 2 is not valid: expected true or false"),
    ("flag-not-a-boolean", ["searcher.smaller_is_better=2"], "true or false"),
    ("seed-beyond-64-bits", [f"seed={2**70}"], "an integer from -9223372036854775808"),
    ("records-beyond-64-bits", [f"records_per_epoch={2**70}"], "9223372036854775807"),
    ("aggregation-beyond-64-bits", [f"optimizations.aggregation_frequency={2**70}"], "to 9223"),
    ("override-does-not-parse", ["hyperparameters.lr=[1,"], "hyperparameters.lr = '[1,'"),
    ("full-width-digits", ["searcher.max_length=１０ batches"], "not ASCII digits (write 10)"),
    ("full-width-letters", ["searcher.name=ｇｒｉｄ"], "full-width characters"),
    ("malformed-key", ["{a:1}=3"], "a dotted key such as hyperparameters.lr"),
]


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("finished")
    done = run_cli([*QUADRATIC, f"hydra.run.dir={where / 'run'}"], cwd=where)
    assert done.returncode == 0, done.stderr
    return where / "run"


@pytest.mark.parametrize(
    ("overrides", "phrase"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_a_config_error_changes_no_file_of_a_finished_run_and_creates_no_new_one(
    finished: Path, tmp_path: Path, overrides: list[str], phrase: str
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    time.sleep(0.01)  # a rewrite would show in the times
    before, tree = _files(copy), _tree(copy)
    done = run_cli([*QUADRATIC, f"hydra.run.dir={copy}", *overrides], cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and phrase in lines[0], lines
    assert "Traceback" not in done.stdout + done.stderr
    assert _tree(copy) == tree
    assert _files(copy) == before

    if overrides == ["resume=false"]:
        return  # only a directory with a checkpoint refuses resume=false
    new = tmp_path / "outputs" / "new"
    again = run_cli([*QUADRATIC, f"hydra.run.dir={new}", *overrides], cwd=tmp_path)
    assert again.returncode == 2, again.stdout + again.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_second_run_on_a_run_directory_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    slow = [
        "+experiment=quadratic",
        "searcher.max_length=400 batches",
        "+hyperparameters.seconds_per_batch=0.01",
        f"hydra.run.dir={run_dir}",
    ]
    first = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *slow],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run_cli([*slow, "resume=true"], cwd=tmp_path)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "another run holds it now" in second.stderr
        assert first.poll() is None  # the first run goes on, undisturbed
    finally:
        first.wait(timeout=120)
    assert first.returncode == 0


@pytest.mark.parametrize("damage", ["emptied", "garbage"])
def test_results_csv_is_a_report_rebuilt_from_the_search_state_on_a_rerun(
    tmp_path: Path, damage: str
) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *QUADRATIC,
        "searcher.name=grid",
        "hyperparameters.dims=choice(2,4)",
        f"hydra.sweep.dir={sweep}",
    ]
    assert run_cli(args, cwd=tmp_path).returncode == 0
    report = (sweep / "results.csv").read_text()
    (sweep / "results.csv").write_text("" if damage == "emptied" else "garbage,row\n1,2,3\n")
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (sweep / "results.csv").read_text() == report
    assert "starting trial" not in again.stdout  # nothing trained again
