"""README.md's "Start your own project", as written: its ``train.py`` and its commands, run
in an empty folder with ``PYTHONPATH`` pointing only at the repository (a pip user's view)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

SECTION = "## Start your own project"


def section() -> str:
    text = (REPO / "README.md").read_text()
    assert SECTION in text
    body = text.split(SECTION, 1)[1]
    return re.split(r"^## ", body, maxsplit=1, flags=re.M)[0]


def fenced() -> list[tuple[str, str]]:
    """The section's code blocks: (language, text)."""
    found: list[tuple[str, str]] = []
    language: str | None = None
    lines: list[str] = []
    for line in section().splitlines(keepends=True):
        if line.startswith("```") and language is None:
            language, lines = line[3:].strip(), []
        elif line.startswith("```"):
            assert language is not None
            found.append((language, "".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    assert language is None, "a code block is not closed"
    return found


def blocks(language: str) -> list[str]:
    return [text for lang, text in fenced() if lang == language]


def test_the_section_is_one_script_and_one_block_of_commands() -> None:
    assert [lang for lang, _ in fenced()] == ["python", "bash"]
    assert "@detflow.main()" in blocks("python")[0]


def test_the_readme_project_runs_sweeps_resumes_and_goes_to_slurm(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(blocks("python")[0])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(
        ["bash", "-ec", blocks("bash")[0]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    runs = list((tmp_path / "outputs").glob("*/*/result.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["epochs"] == 3
    sweeps = list((tmp_path / "multirun").glob("*/*/results.csv"))
    assert len(sweeps) == 1
    with open(sweeps[0]) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3
    assert all(0.001 <= float(r["hyperparameters.lr"]) <= 0.1 for r in rows)
    resumed = json.loads((tmp_path / "runs" / "a" / "result.json").read_text())
    assert (resumed["status"], resumed["epochs"]) == ("completed", 3)
    assert "resumed from" in done.stdout
    assert "#SBATCH" in done.stdout  # the dry run's sbatch script
