"""The no-op Hydra app that :mod:`bench.sweep_overhead` sweeps (run as a script, not imported).

Every job does the same work whichever sweeper runs it: ``detflow.init(cfg)`` and a
``run.fit`` of one batch of a :class:`NoOpTrial` (one validation batch, one checkpoint, the
``result.json`` detflow's sweeper reads). The task appends ``<start> <end> <cpu>`` (wall
clock ``time.time()`` at its start and end, and the CPU seconds it used) to the file named
by ``$DETFLOW_BENCH_TIMES``. When run as ``__main__`` (the sweeping process), it writes
``{"user": s, "system": s, "phases": {...}}`` to ``$DETFLOW_BENCH_RUSAGE`` at exit: its own
CPU time and the wall seconds it spent in each phase it times (see :data:`PHASES`).

Usage::

    python bench/_sweep_app.py -m hydra/sweeper=basic hydra/launcher=basic \\
        'hyperparameters.x=range(0,100)' hydra.sweep.dir=/tmp/basic
    python bench/_sweep_app.py -m hydra/sweeper=detflow hydra/launcher=basic \\
        searcher.name=random searcher.max_trials=100 'hyperparameters.x=range(0,100)' \\
        hydra.sweep.dir=/tmp/detflow
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

from hydra.core.config_store import ConfigStore

import detflow

TIMES_ENV = "DETFLOW_BENCH_TIMES"
RUSAGE_ENV = "DETFLOW_BENCH_RUSAGE"

#: What the sweeping process times: phase -> (module, attribute path) of the function.
PHASES = {
    # Hydra composes a job's config (BasicLauncher and detflow_local call it once per job).
    "compose": ("hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_sweep_config"),
    # detflow's launchers compose a sweep once and derive each job's config (its fallback,
    # a full compose, is counted here too).
    "derive": ("detflow._hydra.derive", "TrialComposer.compose"),
    # Hydra runs a job in-process: job dir, logging, .hydra/*.yaml, then the task. (Patched
    # where it is defined: Hydra loads the basic launcher's module afresh when it scans its
    # plugins, and that module then imports the patched function.)
    "run_job": ("hydra.core.utils", "run_job"),
    # BasicSweeper composes every job's config once before launching (its validation).
    "validate": ("hydra.plugins.sweeper", "Sweeper.validate_batch_is_legal"),
    # detflow validates every planned point before launching.
    "validate_points": ("detflow._hydra.sweeper", "_validate_points"),
    # detflow's driver writes searcher.json and results.csv.
    "save_state": ("detflow._search.driver", "SweepDriver._save_state"),
}
_spent: dict[str, float] = {}


class NoOpTrial(detflow.Trial):
    """One batch that does nothing; a one-batch validation; a tiny state."""

    def __init__(self) -> None:
        self._metrics: dict[str, float] = {"loss": 0.0}
        self._state: dict[str, Any] = {"w": 0}

    def training_data(self, epoch: int) -> list[int]:
        return [1]

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        return self._metrics

    def batch_size(self, batch: Any) -> int:
        return 1

    def validation_data(self) -> list[int]:
        return [1]

    def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
        return self._metrics

    def state_dict(self) -> dict[str, Any]:
        return self._state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state = dict(state)


# A plain-dict config, not a dataclass defined here: ``hydra/launcher=detflow_local`` pickles
# each job's config with ``pickle``, and a worker process cannot import a class of ``__main__``.
ConfigStore.instance().store(
    name="app",
    node={
        "defaults": ["_self_"],
        "name": "noop",
        "resume": False,
        "hyperparameters": {"global_batch_size": 1, "x": 0},
        "searcher": {
            "name": "single",
            "metric": "validation_loss",
            "max_length": "1 batches",
            "max_trials": 1,
            "max_concurrent_trials": 1,
        },
        "min_validation_period": "1 batches",
        "min_checkpoint_period": "1 batches",
    },
)


@detflow.main(config_path=None, config_name="app")
def task(cfg: Any) -> float:
    """``detflow.init`` + a one-batch ``fit``; append this job's start and end times."""
    start, cpu_start = time.time(), time.process_time()
    run = detflow.init(cfg)
    run.fit(NoOpTrial())
    end, cpu_end = time.time(), time.process_time()
    with open(os.environ[TIMES_ENV], "a") as handle:
        handle.write(f"{start:.6f} {end:.6f} {cpu_end - cpu_start:.6f}\n")
    return 0.0


def _timing(phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _spent[phase] = _spent.get(phase, 0.0) + time.perf_counter() - began

    return timed


def _instrument() -> None:
    """Wrap each function of :data:`PHASES` to add up the wall time spent in it."""
    for phase, (module_name, path) in PHASES.items():
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, name, _timing(phase, getattr(owner, name)))


def _write_rusage() -> None:
    path = os.environ.get(RUSAGE_ENV)
    if path:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        record = {"user": usage.ru_utime, "system": usage.ru_stime, "phases": _spent}
        with open(path, "w") as handle:
            json.dump(record, handle)


if __name__ == "__main__":
    atexit.register(_write_rusage)
    _instrument()
    task()
