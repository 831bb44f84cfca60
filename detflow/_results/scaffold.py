"""``detflow new DIR``: write a small working project (it writes files and runs nothing).

The project is a script (``train.py``, detflow's root config: no YAML), an experiment
(``experiments.py``), a trial with no dependencies (``trial.py``: a linear model fitted by
SGD to synthetic data) and a ``README.md`` whose commands run as written.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp()) / "myproject"
>>> [p.name for p in write_project(folder)]
['train.py', 'experiments.py', 'trial.py', 'README.md', '.gitignore']
>>> write_project(folder)
Traceback (most recent call last):
...
detflow._results.scaffold.ProjectExists: ... is not empty: give a new or an empty directory
"""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = ["EXPERIMENT", "ProjectExists", "next_command", "project_files", "write_project"]

#: The experiment the project registers (``+experiment=baseline``).
EXPERIMENT = "baseline"

_TRAIN = '''\
"""Train the project's trial: python train.py +experiment=baseline (README.md has more)."""

from __future__ import annotations

from typing import Any

import detflow
import experiments
from trial import LinearTrial

experiments.register()  # +experiment=NAME finds them


@detflow.main()  # detflow's root config: every key known and typed, -m searches
def train(cfg: Any) -> float | None:
    run = detflow.init(cfg)
    result = run.fit(LinearTrial(run))
    return result.validation.get(run.experiment.searcher.metric)


if __name__ == "__main__":
    train()
'''

_EXPERIMENTS = '''\
"""The experiments, each ``python train.py +experiment=NAME``.

Every key of detflow's schema can be set here (a dict, or a ``detflow.ExperimentConfig``)
and overridden on the command line (``searcher.max_length=10 epochs``, ``seed=1``).
"""

from __future__ import annotations

import detflow


def register() -> None:
    detflow.register_experiment(
        "baseline",
        {
            "hyperparameters": {
                "global_batch_size": 32,
                "base_batch_size": 32,  # the batch size lr was tuned at
                "lr": detflow.scaled(0.02, "linear"),  # follows global_batch_size
                "features": 8,
            },
            "searcher": {"metric": "validation_loss", "max_length": "5 epochs"},
        },
    )
'''

_TRIAL = '''\
"""The trial: a linear model fitted by minibatch SGD to synthetic data (no dependencies).

Put your own model and data here. Keep state_dict() / load_state_dict() in step with what
training changes, and the data's order a function of the seed and the epoch only: then
resume=true (and a pre-empted Slurm job) continues exactly where the run stopped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import detflow


class LinearTrial(detflow.Trial):
    def __init__(self, run: detflow.Run) -> None:
        self.run = run
        self.lr = float(run.hparams["lr"])
        features = int(run.hparams.get("features", 8))
        rng = random.Random(0)  # the same data set for every run and trial
        true_w = [rng.gauss(0.0, 1.0) for _ in range(features)]

        def examples(n: int) -> list[tuple[list[float], float]]:
            xs = [[rng.gauss(0.0, 1.0) for _ in range(features)] for _ in range(n)]
            return [(x, sum(w * v for w, v in zip(true_w, x)) + rng.gauss(0.0, 0.1)) for x in xs]

        self.train_set = examples(1024)
        self.validation_set = examples(256)
        self.w = [0.0] * features
        self.grad = [0.0] * features
        self.pending = 0  # batches whose gradient waits for the next optimizer step

    @staticmethod
    def _batches(examples: list[Any], size: int) -> list[Any]:
        """(inputs, targets) pairs of ``size`` examples (the last one may be smaller)."""
        chunks = [examples[i : i + size] for i in range(0, len(examples), size)]
        return [([x for x, _ in chunk], [y for _, y in chunk]) for chunk in chunks]

    def training_data(self, epoch: int) -> Iterable[Any]:
        rng = random.Random(f"{self.run.seed}:{epoch}")  # the order: seed and epoch only
        shuffled = rng.sample(self.train_set, len(self.train_set))
        return self._batches(shuffled, self.run.per_slot_batch_size)

    def validation_data(self) -> Iterable[Any]:
        return self._batches(self.validation_set, 64)

    def _errors(self, xs: list[list[float]], ys: list[float]) -> list[float]:
        return [sum(w * v for w, v in zip(self.w, x)) - y for x, y in zip(xs, ys)]

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        xs, ys = batch
        errors = self._errors(xs, ys)
        for j in range(len(self.w)):
            self.grad[j] += 2 * sum(e * x[j] for e, x in zip(errors, xs)) / len(xs)
        self.pending += 1
        if self.pending == self.run.aggregation_frequency:  # one optimizer step
            self.w = [w - self.lr * g / self.pending for w, g in zip(self.w, self.grad)]
            self.grad = [0.0] * len(self.w)
            self.pending = 0
        return {"loss": sum(e * e for e in errors) / len(errors)}

    def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
        errors = self._errors(*batch)  # "loss" here is reported as validation_loss
        return {"loss": sum(e * e for e in errors) / len(errors)}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w, "grad": self.grad, "pending": self.pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = [float(v) for v in state["w"]]
        self.grad = [float(v) for v in state["grad"]]
        self.pending = int(state["pending"])
'''

_README = """\
# {title}

A detflow project: `train.py` is the script, `experiments.py` the experiments and
`trial.py` the trial (a linear model fitted by SGD to synthetic data: replace it with
yours). From this folder: one run (its files in `outputs/<date>/<time>/`); a random search
over `lr` (`multirun/<date>/<time>/results.csv`); a run stopped at 2 epochs and continued
from its last checkpoint to the experiment's 5 by `resume=true` in the same run directory,
as after Ctrl-C or a crash; the same search on Slurm (`dry_run=true` prints the sbatch
script: drop it to submit):

```bash
python train.py +experiment=baseline
python train.py -m +experiment=baseline searcher.name=random searcher.max_trials=3 \\
    'hyperparameters.lr=interval(0.001, 0.1)'
python train.py +experiment=baseline hydra.run.dir=runs/first 'searcher.max_length=2 epochs'
python train.py +experiment=baseline hydra.run.dir=runs/first resume=true
python train.py -m +experiment=baseline searcher.name=random searcher.max_trials=3 \\
    'hyperparameters.lr=interval(0.001, 0.1)' hydra/launcher=detflow_slurm \\
    hydra.launcher.dry_run=true
```

`detflow summary multirun/<date>/<time>` ranks the trials; `detflow explain RUN_DIR` shows
where every hyperparameter came from.
"""

_GITIGNORE = """\
outputs/
multirun/
runs/
__pycache__/
"""


class ProjectExists(ValueError):
    """The directory is there and not empty: ``detflow new`` writes into nothing of yours."""


def project_files(title: str) -> dict[str, str]:
    """The project's files, by name, with their text (``title`` heads the README)."""
    return {
        "train.py": _TRAIN,
        "experiments.py": _EXPERIMENTS,
        "trial.py": _TRIAL,
        "README.md": _README.format(title=title),
        ".gitignore": _GITIGNORE,
    }


def write_project(directory: Path) -> list[Path]:
    """Write the project into ``directory`` (created if missing); return the files written.

    Raises :class:`ProjectExists` when ``directory`` is a file or a directory that holds
    anything.
    """
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ProjectExists(f"{directory} is not empty: give a new or an empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    title = directory.resolve().name or "project"
    written = []
    for name, text in project_files(title).items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def next_command(directory: Path) -> str:
    """The shell command that runs the new project's experiment, from the current directory.

    >>> next_command(Path("my project"))
    "cd 'my project' && python train.py +experiment=baseline"
    """
    return f"cd {shlex.quote(str(directory))} && python train.py +experiment={EXPERIMENT}"
