"""Single-run start-up: a detflow app against a plain Hydra app with the same dataclass config.

Run from the repository root::

    python -m bench.startup                 # 10 runs of each side, alternated
    python -m bench.startup --repeats 20

Each side is a fresh ``python APP.py`` process, timed from ``subprocess.run`` to its exit:

- ``plain Hydra``: ``@hydra.main`` over a dataclass config in the ConfigStore; the task
  function reads two values of the config and returns.
- ``detflow``: the same dataclass config and the same script, with ``@detflow.main``; the
  task calls ``detflow.init(cfg)`` and ``run.fit()`` of a no-op trial for one batch (one
  validation, one checkpoint, ``result.json``, ``hparams.json``, ``metrics.jsonl``).
- ``train.py``: the example entry point, ``+experiment=quadratic`` for one batch, against
  ``plain Hydra app, train.py's config``: a ``@hydra.main`` over train.py's own config
  (``conf/``: the same dataclasses, experiments and defaults list) whose task only reads it.
  It imports the example's ``trials`` as train.py does (torch and scikit-learn with them,
  since #16: the local launcher's fork server preloads what the task imports), so the
  pair compares detflow's cost, not torch's import.

The detflow app runs with ``DETFLOW_TENSORBOARD=0`` and once more with the TensorBoard
writer on. The target is detflow / plain Hydra ≤ 1.15 (median wall time) for each pair.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench._common import table

REPO = Path(__file__).resolve().parent.parent
TARGET = 1.15

_CONFIG = """
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class Searcher:
    name: str = "single"
    metric: str = "validation_loss"
    smaller_is_better: bool = True
    max_length: Any = "1 batches"
    max_trials: int = 1
    max_concurrent_trials: int = 1


@dataclass
class AppConfig:
    name: str = "startup"
    seed: int = 0
    resume: bool = False
    hyperparameters: dict = field(default_factory=lambda: {"global_batch_size": 1, "lr": 0.1})
    searcher: Searcher = field(default_factory=Searcher)
    records_per_epoch: Optional[int] = None
    min_validation_period: Any = "1 batches"
    min_checkpoint_period: Any = "1 batches"


ConfigStore.instance().store(name="app", node=AppConfig)
"""

PLAIN = (
    _CONFIG
    + """
import hydra


@hydra.main(version_base="1.3", config_path=None, config_name="app")
def task(cfg):
    return cfg.hyperparameters.lr * cfg.hyperparameters.global_batch_size


if __name__ == "__main__":
    task()
"""
)

DETFLOW = (
    _CONFIG
    + """
import detflow


class NoOp(detflow.Trial):
    def training_data(self, epoch):
        return [1]

    def train_batch(self, batch):
        return {"loss": 0.0}

    def batch_size(self, batch):
        return 1

    def validation_data(self):
        return [1]

    def evaluate_batch(self, batch):
        return {"loss": 0.0}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@detflow.main(config_path=None, config_name="app")
def task(cfg):
    run = detflow.init(cfg)
    run.fit(NoOp())


if __name__ == "__main__":
    task()
"""
)


# A plain Hydra app over train.py's own config (conf/: the same dataclasses, experiments and
# defaults list) and train.py's imports: the task function reads the config and returns; no
# detflow.main, no init.
PLAIN_TRAIN = f"""
import hydra

import conf
import trials  # train.py imports the example's trials (and torch) at top level too

conf.register()


@hydra.main(version_base="1.3", config_path={str(REPO / "conf")!r}, config_name="config")
def task(cfg):
    return cfg.hyperparameters.global_batch_size


if __name__ == "__main__":
    task()
"""


@dataclass
class Side:
    label: str
    argv: list[str]
    env: dict[str, str]
    baseline: str | None = None  # the label of the side this one is compared with


@dataclass
class Timing:
    label: str
    baseline: str | None
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


def sides(workdir: Path) -> list[Side]:
    """The processes to time; the first is the baseline."""
    (workdir / "plain_app.py").write_text(PLAIN)
    (workdir / "detflow_app.py").write_text(DETFLOW)
    (workdir / "plain_train.py").write_text(PLAIN_TRAIN)
    off = {"DETFLOW_TENSORBOARD": "0"}
    on = {"DETFLOW_TENSORBOARD": "1"}
    train = [str(REPO / "train.py"), "+experiment=quadratic", "searcher.max_length=1 batches"]
    plain, plain_train = "plain Hydra app", "plain Hydra app, train.py's config"
    app = [str(workdir / "detflow_app.py")]
    return [
        Side(plain, [str(workdir / "plain_app.py")], {}),
        Side("detflow app (init + 1-batch fit)", app, off, plain),
        Side("detflow app, TensorBoard writer on", app, on, plain),
        Side(plain_train, [str(workdir / "plain_train.py"), *train[1:]], {}),
        Side("train.py +experiment=quadratic, 1 batch", train, off, plain_train),
    ]


def time_once(side: Side, workdir: Path, run: int) -> float:
    """Wall seconds of one ``python ARGV`` process, from start to exit."""
    out = workdir / "runs" / f"{side.label.split()[0]}-{run}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "1", **side.env}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *side.argv, f"hydra.run.dir={out}"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{side.label} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def measure(repeats: int, workdir: Path) -> list[Timing]:
    """Alternate the sides ``repeats`` times (after one warm-up run each)."""
    all_sides = sides(workdir)
    timings = [Timing(side.label, side.baseline, []) for side in all_sides]
    for side in all_sides:
        time_once(side, workdir, -1)  # warm the page cache and .pyc files
    for run in range(repeats):
        for side, timing in zip(all_sides, timings, strict=True):
            timing.seconds.append(time_once(side, workdir, run))
    return timings


def render(timings: list[Timing]) -> list[str]:
    by_label = {timing.label: timing for timing in timings}
    header = ["process", "median s", "best s", "compared with", "ratio", f"target <= {TARGET}x"]
    rows = []
    for timing in timings:
        cells = [timing.label, f"{timing.median:.3f}", f"{timing.best:.3f}", "-", "-", "-"]
        if timing.baseline is not None:
            ratio = timing.median / by_label[timing.baseline].median
            verdict = "PASS" if ratio <= TARGET else "FAIL"
            cells[3:] = [timing.baseline, f"{ratio:.2f}x", verdict]
        rows.append(cells)
    return table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each side")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="df-startup-") as tmp:
        timings = measure(args.repeats, Path(tmp))
    print("\n".join(render(timings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
