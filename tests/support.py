"""Helpers the tests share: the repository root, the example CLI run for real, Hydra isolation."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.version import VersionBase

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python train.py ARGS`` from the repository, output under ``cwd``."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR") if (env or {}).get("HYDRA_FULL_ERROR") is None else None
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_driver(args: list[str], *, cwd: Path, log: Path) -> subprocess.Popen[str]:
    """Start ``python train.py ARGS`` in the background, its output going to ``log``."""
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args],
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


def script_command(module: str, experiment: str, *args: str) -> list[str]:
    """``python -m MODULE [flags] +experiment=EXPERIMENT ARGS``: a training script run as a
    user runs it, Hydra's flags (``-m``) before the overrides."""
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if a not in flags]
    return [sys.executable, "-m", module, *flags, f"+experiment={experiment}", *rest]


def run_script(
    command: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (:func:`script_command`) from ``cwd``, its output captured; ``env``
    by default the repository on ``PYTHONPATH``."""
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)} if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def told(state_path: Path) -> int:
    """Results a sweep's saved state (``searcher.json``) holds: a metric or an error per told
    job; 0 before the state exists."""
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return 0
    trials = state["searcher"]["trials"]
    return sum(len(t.get("metrics", {})) + (t.get("error") is not None) for t in trials)


@dataclass(frozen=True)
class KilledSweep:
    """What :func:`kill_and_resume` saw: the results recorded at each kill, the output of
    every driver in order (the last one's included), and the last, uninterrupted run."""

    killed_at: list[int]
    outputs: list[str]
    final: subprocess.CompletedProcess[str]


def kill_and_resume(
    args: list[str], *, cwd: Path, state: Path, kills: int | Sequence[int]
) -> KilledSweep:
    """Run the sweep ``python train.py ARGS`` (its state at ``state``), SIGKILL the driver as
    it records results, then run it once more to its end.

    ``kills``: a number N kills N drivers, each once it has recorded a result of its own; a
    sequence kills one driver per entry, once the state holds at least that many results.
    A driver that ends (or runs 60 s) before its kill point is not killed.
    """
    command = [sys.executable, str(REPO / "train.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}  # lines up to a kill
    thresholds: list[int | None] = [None] * kills if isinstance(kills, int) else list(kills)
    killed_at: list[int] = []
    outputs: list[str] = []
    for threshold in thresholds:
        kill_at = told(state) + 1 if threshold is None else threshold
        driver = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 60
        while driver.poll() is None and time.monotonic() < deadline:
            if told(state) >= kill_at:
                driver.send_signal(signal.SIGKILL)
                killed_at.append(told(state))
                break
            time.sleep(0.005)
        outputs.append(driver.communicate(timeout=60)[0])
    final = run_cli(args, cwd=cwd)
    outputs.append(final.stdout)
    return KilledSweep(killed_at, outputs, final)


def validations(run_dir: Path) -> list[tuple[int, int, dict[str, float]]]:
    """Each validation of ``metrics.jsonl``: (batches, records, metrics)."""
    return [
        (r["batches"], r["records"], r["metrics"])
        for r in read_metrics(run_dir)
        if r["kind"] == "validation"
    ]


def read_result(run_dir: Path) -> dict[str, Any]:
    """The run's ``result.json``."""
    result: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
    return result


@contextlib.contextmanager
def isolated_hydra() -> Iterator[None]:
    """Snapshot the ConfigStore and clear GlobalHydra; restore both on the way out."""
    # Hydra imports its plugins (which register their own configs) once per process: do it
    # before the snapshot, so restoring the snapshot keeps the plugins' configs.
    Plugins.instance()
    store = ConfigStore.instance()
    saved = copy.deepcopy(store.repo)
    # initialize_config_dir(version_base=...) sets Hydra's process-wide version base, which
    # decides defaults such as hydra.job.chdir for every later Hydra app in this process.
    version_base = VersionBase.instance().getbase()
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        store.repo = saved
        VersionBase.instance().version_base = version_base


#: Mounting a tmpfs needs root: without it the disk-full tests skip, except in CI (root
#: there, as for the Slurm tests), where a failed mount fails the test.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="mounting a tmpfs needs root: run as root",
)
