"""YAHPO Gym's ``lcbench`` surrogate as a benchmark problem for ``bench.search_quality``.

``lcbench`` (Zimmer et al. 2021, as fitted by YAHPO Gym, Pfisterer et al. 2022) predicts the
learning curves of funnel-shaped MLPs trained with SGD on 34 OpenML tasks: validation accuracy
(in percent) and cross-entropy at every epoch from 1 to 52, for 7 hyperparameters. The model
and its metadata are in ``bench/data/yahpo_data`` (Apache 2.0, YAHPO data v1.0.2: ``lcbench``
only, plus its line of the global statistics); ``yahpo-gym`` and ``onnxruntime`` run it
(``pip install -e ".[bench]"``). Nothing is downloaded. The surrogate is deterministic
(``noisy=False``): a config's value at an epoch is the same whenever it is asked.

The search space is lcbench's own ConfigSpace (``config_space.json``) without the task id and
the fidelity, as detflow dimensions: ``batch_size`` log-integer 16..512, ``learning_rate``
log 1e-4..1e-1, ``momentum`` 0.1..0.99, ``weight_decay`` 1e-5..0.1, ``num_layers`` integer
1..5, ``max_units`` log-integer 64..1024, ``max_dropout`` 0..1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detflow._search.space import Interval, Space, sample

DATA = Path(__file__).resolve().parent / "data" / "yahpo_data"
#: The tasks the defaults of asha / adaptive_asha / bohb were tuned on (issue #15).
TUNING_TASKS = ("3945", "34539", "146212", "167104", "168868")
#: What ``--metric`` accepts: the surrogate's output -> whether larger is better.
METRICS = {"val_accuracy": True, "val_cross_entropy": False}
EPOCHS = 52
#: Random configs at epoch 52 whose best value stands for the optimum (see :func:`optimum`).
OPTIMUM_SAMPLE = 50_000
_CHUNK = 1_000  # rows per surrogate call (yahpo stacks its rows one by one)


def tasks() -> tuple[str, ...]:
    """The 34 OpenML task ids lcbench has, as its ConfigSpace lists them.

    >>> len(tasks()), tasks()[0]
    (34, '3945')
    """
    for hp in _config_space()["hyperparameters"]:
        if hp["name"] == "OpenML_task_id":
            return tuple(hp["choices"])
    raise RuntimeError(f"no OpenML_task_id in {DATA / 'lcbench' / 'config_space.json'}")


def space() -> Space:
    """lcbench's search space (its ConfigSpace, less task id and epoch) as detflow's dimensions.

    >>> sorted(space()), space()["batch_size"]
    (['batch_size', 'learning_rate', 'max_dropout', 'max_units', 'momentum', 'num_layers', \
'weight_decay'], Interval(low=16, high=512, log=True, integer=True))
    """
    dims: Space = {}
    for hp in _config_space()["hyperparameters"]:
        if hp["name"] in ("OpenML_task_id", "epoch"):
            continue
        if hp["type"] == "uniform_int":
            dims[hp["name"]] = Interval(hp["lower"], hp["upper"], log=hp["log"], integer=True)
        elif hp["type"] == "uniform_float":
            dims[hp["name"]] = Interval(float(hp["lower"]), float(hp["upper"]), log=hp["log"])
        else:
            raise RuntimeError(f"lcbench hyperparameter of an unknown type: {hp}")
    return dims


def _config_space() -> dict[str, Any]:
    with open(DATA / "lcbench" / "config_space.json") as f:
        data: dict[str, Any] = json.load(f)
    return data


_SETS: dict[str, Any] = {}


def benchmark_set(task: str) -> Any:
    """yahpo_gym's ``BenchmarkSet("lcbench", instance=task)`` on the data in ``bench/data``,
    one single-threaded ONNX session per task and process (kept for the process's life)."""
    if task not in _SETS:
        if task not in tasks():
            raise ValueError(f"lcbench has no task {task!r}: expected one of {', '.join(tasks())}")
        _point_yahpo_at_data()
        from yahpo_gym import BenchmarkSet  # type: ignore[import-untyped]

        with contextlib.redirect_stdout(io.StringIO()):  # it prints its citations
            _SETS[task] = BenchmarkSet("lcbench", instance=task, check=False, multithread=False)
    return _SETS[task]


def _point_yahpo_at_data() -> None:
    """yahpo_gym reads its data path from a YAML file: one of our own, not ``~/.config``."""
    if os.environ.get("YAHPO_LOCAL_CONFIG", "").startswith(tempfile.gettempdir()):
        return
    handle, path = tempfile.mkstemp(prefix="detflow-yahpo-", suffix=".yaml")
    with os.fdopen(handle, "w") as f:
        f.write(f"data_path: {json.dumps(str(DATA))}\n")
    os.environ["YAHPO_LOCAL_CONFIG"] = path


def query(task: str, configs: list[dict[str, Any]], epochs: list[int]) -> list[dict[str, float]]:
    """The surrogate's outputs for each ``(config, epoch)`` pair, in order."""
    rows = [
        {"OpenML_task_id": task, **config, "epoch": epoch}
        for config, epoch in zip(configs, epochs, strict=True)
    ]
    bench = benchmark_set(task)
    out: list[dict[str, float]] = []
    for start in range(0, len(rows), _CHUNK):
        out.extend(bench.objective_function(rows[start : start + _CHUNK]))
    return out


def optimum(task: str, metric: str, size: int = OPTIMUM_SAMPLE) -> float:
    """The best ``metric`` at epoch 52 over ``size`` random configs (drawn as detflow's random
    search draws, from ``Random(f"lcbench-optimum:{i}")``): the "best achievable" of regret.

    YAHPO's global statistics give the best over 0.5 M random points at any epoch
    (:func:`reference_best`); this is the same idea at the epoch the regret is taken at.
    """
    dims = space()
    configs = [sample(dims, random.Random(f"lcbench-optimum:{i}")) for i in range(size)]
    values = [float(row[metric]) for row in query(task, configs, [EPOCHS] * size)]
    return max(values) if METRICS[metric] else min(values)


def reference_best(task: str, metric: str) -> float | None:
    """YAHPO's own best ``metric`` of ``task`` (0.5 M random points, any epoch), if listed."""
    larger = METRICS[metric]
    path = DATA / "global_statistics" / "instance_target_statistics.csv"
    with open(path) as f:
        for line in f:
            name, statistic, value, scenario, instance = line.strip().split(",")
            wanted = "max" if larger else "min"
            if (name, statistic, scenario, instance) == (metric, wanted, "lcbench", task):
                return float(value)
    return None


@dataclass
class LcbenchProblem:
    """One lcbench task as the simulator sees it: fidelity = epochs 1..52, a loss to minimise.

    ``loss`` is ``-metric`` for a metric to maximise, so that regret (``loss - best loss``)
    is in the metric's own units (accuracy points for ``val_accuracy``).
    """

    task: str
    metric: str
    best: float  # the optimum's metric (from :func:`optimum`)

    z_min = 1
    z_max = EPOCHS

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"--metric {self.metric!r}: expected one of {', '.join(METRICS)}")
        self.name = f"lcbench/{self.task}"
        self.smaller_is_better = not METRICS[self.metric]
        self.optimum = self.loss(self.best)
        self._curves: dict[tuple[Any, ...], list[float]] = {}
        self.keys = tuple(sorted(space()))

    def loss(self, metric: float) -> float:
        return metric if self.smaller_is_better else -metric

    def metric_at(self, config: dict[str, Any], epoch: int) -> float:
        """``metric`` of ``config`` after ``epoch`` epochs: one surrogate call per config for
        the epoch-1 value, and one for the whole curve once a later epoch is asked."""
        key = tuple(config[k] for k in self.keys)
        curve = self._curves.get(key)
        if curve is None or (len(curve) < epoch):
            epochs = [1] if epoch == 1 else list(range(1, EPOCHS + 1))
            rows = query(self.task, [config] * len(epochs), epochs)
            curve = [float(row[self.metric]) for row in rows]
            self._curves[key] = curve
        return curve[epoch - 1]

    def value(self, config: dict[str, Any], z: int) -> float:
        """The loss (to minimise) of ``config`` at epoch ``z``."""
        return self.loss(self.metric_at(config, z))

    def regret(self, config: dict[str, Any]) -> float:
        """The optimum's metric minus ``config``'s at epoch 52 (metric units, >= 0 unless
        ``config`` beats every config of the optimum's sample)."""
        return self.value(config, self.z_max) - self.optimum

    def space(self) -> Space:
        return space()
