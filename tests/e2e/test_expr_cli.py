"""``${df.expr:...}`` through ``python train.py``: re-derived after every override and sweep
point, and refused before any work in one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, run_cli

BASE = [
    "+experiment=quadratic",
    "searcher.max_length=4 batches",
    "+hyperparameters.width=8",
]
HIDDEN = "+hyperparameters.hidden=${df.expr:4 * hyperparameters.width}"


def _hparams(run: Path) -> dict[str, dict[str, object]]:
    data = json.loads((run / "hparams.json").read_text())
    assert isinstance(data, dict)
    return data


def test_an_override_of_the_input_re_derives_the_value(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = run_cli(
        [*BASE, HIDDEN, "hyperparameters.width=16", f"hydra.run.dir={run}"], cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    hidden = _hparams(run)["hyperparameters.hidden"]
    assert hidden == {
        "value": 64,
        "source": "override",
        "expression": "${df.expr:4 * hyperparameters.width}",
    }
    explained = subprocess.run(
        [sys.executable, "-m", "detflow._results.cli", "explain", str(run)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert explained.returncode == 0, explained.stderr
    assert "hidden = 64 = 4 * width(16, override)" in explained.stdout


def test_each_grid_point_derives_its_own_value(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [*BASE, HIDDEN, "searcher.name=grid", "hyperparameters.width=choice(2,4)"]
    done = run_cli(["-m", *args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    derived = {}
    for trial in ("0", "1"):
        hp = _hparams(sweep / trial)
        derived[hp["hyperparameters.width"]["value"]] = hp["hyperparameters.hidden"]["value"]
    assert derived == {2: 8, 4: 16}


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        (
            "+hyperparameters.hidden=${df.expr:4 * hyperparameters.width + hyperparameters.h}",
            "hyperparameters.hidden -> hyperparameters.h",
        ),
        ("+hyperparameters.hidden=${df.expr:4 * widht}", "widht is not a key"),
        ("""+hyperparameters.hidden=${df.expr:'__import__("os")'}""", "a call of __import__"),
        # Unquoted parentheses: Hydra's grammar refuses the override before detflow sees it.
        ("+hyperparameters.hidden=${df.expr:__import__('os')}", "token recognition error"),
    ],
    ids=["cycle", "unknown-key", "import", "import-unquoted"],
)
def test_a_bad_expression_fails_before_work_in_one_line(
    tmp_path: Path, override: str, phrase: str
) -> None:
    run = tmp_path / "run"
    extra = ["+hyperparameters.h=${df.expr:hidden}"] if "hyperparameters.h}" in override else []
    done = run_cli([*BASE, override, *extra, f"hydra.run.dir={run}"], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    assert "hyperparameters.hidden" in errors[0]
    assert "Traceback" not in done.stderr
    if phrase != "hyperparameters.hidden -> hyperparameters.h":
        assert phrase in errors[0], errors[0]
    else:
        assert "hidden -> h -> hidden" in errors[0], errors[0]
    assert not (run / "hparams.json").exists()
