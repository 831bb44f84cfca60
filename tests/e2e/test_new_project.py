"""``detflow new DIR`` end to end: the project it writes runs, sweeps and resumes as written.

Every command runs in a subprocess from a temporary directory, with ``PYTHONPATH`` pointing
only at the repository, as a user who installed detflow with pip has it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.slurm_support import needs_slurm
from tests.support import REPO, read_metrics

SEARCH = [
    "-m",
    "+experiment=baseline",
    "searcher.name=random",
    "searcher.max_trials=3",
    "hyperparameters.lr=interval(0.001, 0.1)",
]


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def detflow_new(directory: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "detflow._results.cli", "new", directory], cwd)


def train(project: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(project / "train.py"), *args], cwd)


def results(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "results.csv") as handle:
        return list(csv.DictReader(handle))


def result_json(run_dir: Path) -> dict[str, Any]:
    data = json.loads((run_dir / "result.json").read_text())
    assert isinstance(data, dict)
    return data


def without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("time", "window")} for r in records]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    done = detflow_new("proj", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "wrote proj: train.py, experiments.py, trial.py, README.md, .gitignore",
        "next: cd proj && python train.py +experiment=baseline  "
        "(README.md there: a search, resume, Slurm)",
    ]
    return tmp_path / "proj"


def test_new_refuses_a_directory_that_holds_anything_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine\n")
    (tmp_path / "afile").write_text("")
    for target in ("full", "afile"):
        done = detflow_new(target, tmp_path)
        assert done.returncode == 2
        assert done.stderr == (
            f"detflow new: error: {target} is not empty: give a new or an empty directory\n"
        )
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert detflow_new("empty", tmp_path).returncode == 0
    assert (tmp_path / "empty" / "train.py").is_file()


def test_the_project_runs_from_another_directory(project: Path, tmp_path: Path) -> None:
    done = train(project, "+experiment=baseline", "hydra.run.dir=single", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = result_json(tmp_path / "single")
    assert (result["status"], result["epochs"], result["batches"]) == ("completed", 5, 160)
    validations = [r for r in read_metrics(tmp_path / "single") if r["kind"] == "validation"]
    losses = [r["metrics"]["validation_loss"] for r in validations]
    assert len(losses) == 5 and losses[-1] < losses[0] / 10  # it learns


def test_the_project_runs_a_random_search_from_the_command_line(
    project: Path, tmp_path: Path
) -> None:
    done = train(project, *SEARCH, "hydra.sweep.dir=search", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = results(tmp_path / "search")
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3
    lrs = [float(r["hyperparameters.lr"]) for r in rows]
    assert len(set(lrs)) == 3 and all(0.001 <= lr <= 0.1 for lr in lrs)
    again = train(project, *SEARCH, "hydra.sweep.dir=search", cwd=tmp_path)  # resumes
    assert again.returncode == 0, again.stdout + again.stderr
    assert "starting trial" not in again.stdout
    assert results(tmp_path / "search") == rows


def test_the_project_resumes_to_the_metrics_of_an_uninterrupted_run(
    project: Path, tmp_path: Path
) -> None:
    first = train(
        project,
        "+experiment=baseline",
        "hydra.run.dir=r",
        "searcher.max_length=2 epochs",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    again = train(project, "+experiment=baseline", "hydra.run.dir=r", cwd=tmp_path)
    assert again.returncode == 2
    assert "resume" in again.stderr and "Traceback" not in again.stderr
    resumed = train(project, "+experiment=baseline", "hydra.run.dir=r", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert re.search(r"resumed from \S+: 64 batches", resumed.stdout)
    whole = train(project, "+experiment=baseline", "hydra.run.dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert without_times(read_metrics(tmp_path / "r")) == without_times(
        read_metrics(tmp_path / "whole")
    )
    assert (
        result_json(tmp_path / "r")["validation"] == result_json(tmp_path / "whole")["validation"]
    )


def test_the_project_readme_commands_run_as_written(project: Path) -> None:
    readme = (project / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1
    done = run(["bash", "-ec", blocks[0]], project, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((project / "outputs").glob("*/*/result.json"))) == 1
    sweeps = sorted((project / "multirun").glob("*/*/results.csv"))
    assert len(sweeps) == 1  # the dry run submits nothing and writes no results
    assert [r["status"] for r in results(sweeps[0].parent)] == ["COMPLETED"] * 3
    assert result_json(project / "runs" / "first")["epochs"] == 5
    assert "#SBATCH" in done.stdout


@needs_slurm
def test_the_project_searches_on_slurm(project: Path, tmp_path: Path) -> None:
    slurm = [
        "hydra/launcher=detflow_slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.time=10",
        "hydra.launcher.gpus_per_node=0",
    ]
    search = [a.replace("max_trials=3", "max_trials=2") for a in SEARCH]
    done = train(project, *search, *slurm, "hydra.sweep.dir=slurm", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["status"] for r in results(tmp_path / "slurm")] == ["COMPLETED"] * 2


ONE_FILE_SUBCLASS = """
from dataclasses import dataclass

import detflow


@dataclass
class ModelConfig(detflow.ExperimentConfig):
    model: str = "small"


class Step(detflow.Trial):
    def __init__(self, run):
        self.run, self.w = run, 0.0

    def training_data(self, epoch):
        return [[1.0] * self.run.per_slot_batch_size] * 4

    def train_batch(self, batch):
        self.w += self.run.hparams["lr"] * (1.0 - self.w)
        return {"loss": (1.0 - self.w) ** 2}

    def validation_data(self):
        return [[0.0]]

    def evaluate_batch(self, batch):
        return {"loss": (1.0 - self.w) ** 2}

    def state_dict(self):
        return {"w": self.w}

    def load_state_dict(self, state):
        self.w = state["w"]


detflow.register_experiment(
    "m", ModelConfig(hyperparameters={"global_batch_size": 8, "lr": 0.1})
)


@detflow.main()
def train(cfg):
    print(f"model={cfg.model} name={cfg.name} searcher={cfg.searcher.name}")
    run = detflow.init(cfg)
    run.fit(Step(run))


if __name__ == "__main__":
    train()
"""


def test_a_one_file_project_with_its_own_config_class_sweeps(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(ONE_FILE_SUBCLASS)
    done = train(
        tmp_path,
        "-m",
        "+experiment=m",
        "model=large",
        "searcher.name=grid",
        "hyperparameters.lr=choice(0.1, 0.2)",
        "searcher.max_length=2 epochs",
        "hydra.sweep.dir=s",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["status"] for r in results(tmp_path / "s")] == ["COMPLETED"] * 2
    for trial in ("0", "1"):  # each trial process saw the class's own key
        assert (
            "model=large name=m searcher=grid"
            in (tmp_path / "s" / trial / "output.log").read_text()
        )
    typo = train(tmp_path, "+experiment=m", "modle=large", cwd=tmp_path)
    assert typo.returncode == 2
    assert typo.stderr.startswith("Error: ") and "modle" in typo.stderr
    assert len(typo.stderr.splitlines()) == 1
